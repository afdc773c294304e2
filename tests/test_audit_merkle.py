"""RFC 9162 Merkle tree: known vectors from the CT / transparency-dev test data, and properties."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.audit._internal.merkle import (
    EMPTY_ROOT,
    CompactRange,
    MerkleTree,
    ProofError,
    leaf_hash,
    node_hash,
    verify_consistency,
    verify_inclusion,
)

h = bytes.fromhex

# The RFC 6962 test leaves and the roots of their prefixes (transparency-dev/merkle testonly).
LEAVES = [h(x) for x in ("", "00", "10", "2021", "3031", "40414243", "5051525354555657",
                         "606162636465666768696a6b6c6d6e6f")]  # fmt: skip
ROOTS = [h(x) for x in (
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
)]  # fmt: skip

INCLUSION = {  # (index, size) -> path
    (0, 1): [],
    (0, 2): ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"],
    (1, 2): ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"],
    (2, 3): ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
    (1, 5): ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
             "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
             "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"],
    (0, 8): ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
             "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
             "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"],
    (5, 8): ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
             "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
             "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"],
}  # fmt: skip

CONSISTENCY = {  # (old, new) -> path
    (1, 1): [],
    (1, 8): ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
             "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
             "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"],
    (6, 8): ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
             "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
             "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"],
    (2, 5): ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
             "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"],
}  # fmt: skip

# compact/range_test.go TestGetRootHashGolden: leaf i is u16 little-endian i.
GOLDEN = {
    10: "VjWMPSYNtCuCNlF/RLnQy6HcwSk6CIipfxm+hettA+4=",
    15: "j4SulYmocFuxdeyp12xXCIgK6PekBcxzAIj4zbQzNEI=",
    16: "c+4Uc6BCMOZf/v3NZK1kqTUJe+bBoFtOhP+P3SayKRE=",
    100: "dUh9hYH88p0CMoHkdr1wC2szbhcLAXOejWpINIooKUY=",
    255: "SmdsuKUqiod3RX2jyF2M6JnbdE4QuTwwipfAowI4/i0=",
}


def test_hasher_vectors() -> None:
    assert ROOTS[0] == EMPTY_ROOT
    assert leaf_hash(b"") == ROOTS[1]
    assert leaf_hash(b"L123456") == h(
        "395aa064aa4c29f7010acfe3f25db9485bbd4b91897b6ad7ad547639252b4d56"
    )
    assert node_hash(b"N123", b"N456") == h(
        "aa217fe888e47007fa15edab33c2b492a722cb106c64667fc2b044444de66bbb"
    )


def test_roots_of_every_prefix() -> None:
    tree = MerkleTree()
    compact = CompactRange()
    assert tree.root() == compact.root() == ROOTS[0]
    for size, leaf in enumerate(LEAVES, start=1):
        tree.append(leaf)
        compact.append(leaf)
        assert tree.root() == compact.root() == ROOTS[size]
    # Earlier sizes stay answerable from the full tree.
    assert [tree.root(n) for n in range(9)] == ROOTS


def test_golden_roots_of_larger_trees() -> None:
    tree = MerkleTree()
    compact = CompactRange()
    for i in range(255):
        tree.append(i.to_bytes(2, "little"))
        compact.append(i.to_bytes(2, "little"))
        if compact.size in GOLDEN:
            assert base64.b64encode(compact.root()).decode() == GOLDEN[compact.size]
    for size, root in GOLDEN.items():
        assert base64.b64encode(tree.root(size)).decode() == root


def _tree(n: int) -> MerkleTree:
    return MerkleTree(leaf_hash(x) for x in LEAVES[:n])


@pytest.mark.parametrize(("index", "size"), list(INCLUSION))
def test_inclusion_vectors(index: int, size: int) -> None:
    tree = MerkleTree(leaf_hash(x) for x in LEAVES)
    expected = [h(x) for x in INCLUSION[index, size]]
    assert tree.inclusion_proof(index, size) == expected
    verify_inclusion(leaf_hash(LEAVES[index]), index, size, expected, ROOTS[size])


@pytest.mark.parametrize(("old", "new"), list(CONSISTENCY))
def test_consistency_vectors(old: int, new: int) -> None:
    tree = MerkleTree(leaf_hash(x) for x in LEAVES)
    expected = [h(x) for x in CONSISTENCY[old, new]]
    assert tree.consistency_proof(old, new) == expected
    verify_consistency(old, new, ROOTS[old], ROOTS[new], expected)


def _corrupted_inclusion(
    index: int, size: int, proof: list[bytes], root: bytes, leaf: bytes
) -> Iterator[tuple[int, int, bytes, bytes, list[bytes]]]:
    """The corruptions of transparency-dev's verify_test.go, which every verifier must reject."""
    some = h("abacaba000000000000000000000000000000000000000000060061e00123456")
    yield index - 1, size, root, leaf, proof
    yield index + 1, size, root, leaf, proof
    yield index ^ 2, size, root, leaf, proof
    yield index, size * 2, root, leaf, proof
    yield index, size // 2, root, leaf, proof
    yield index, size, root, leaf_hash(b"WrongLeaf"), proof
    yield index, size, EMPTY_ROOT, leaf, proof
    yield index, size, some, leaf, proof
    yield index, size, root, leaf, [*proof, root]
    yield index, size, root, leaf, [root, *proof]
    yield index, size, root, leaf, [*proof, b""]
    for i in range(len(proof)):
        flipped = list(proof)
        flipped[i] = bytes([proof[i][0] ^ 8]) + proof[i][1:]
        yield index, size, root, leaf, flipped
    if proof:
        yield index, size, root, leaf, proof[:-1]
    if len(proof) > 1:
        yield index, size, root, leaf, [proof[0], some, *proof[1:]]


@pytest.mark.parametrize(("index", "size"), list(INCLUSION))
def test_corrupted_inclusion_proofs_fail(index: int, size: int) -> None:
    proof = [h(x) for x in INCLUSION[index, size]]
    leaf = leaf_hash(LEAVES[index])
    for args in _corrupted_inclusion(index, size, proof, ROOTS[size], leaf):
        if args == (index, size, ROOTS[size], leaf, proof):
            continue
        with pytest.raises(ProofError):
            verify_inclusion(args[3], args[0], args[1], args[4], args[2])


def test_consistency_edge_cases() -> None:
    verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    verify_consistency(0, 5, EMPTY_ROOT, ROOTS[5], [])
    with pytest.raises(ProofError):
        verify_consistency(0, 5, EMPTY_ROOT, ROOTS[5], [ROOTS[1]])
    with pytest.raises(ProofError):
        verify_consistency(3, 3, ROOTS[3], ROOTS[4], [])
    with pytest.raises(ProofError):
        verify_consistency(5, 3, ROOTS[5], ROOTS[3], [])
    with pytest.raises(ProofError):
        verify_consistency(2, 5, ROOTS[2], ROOTS[5], [])
    with pytest.raises(ProofError):
        verify_consistency(2, 5, ROOTS[2], ROOTS[5], [ROOTS[1]] * 65)


@settings(max_examples=150, deadline=None)
@given(st.integers(min_value=1, max_value=300), st.data())
def test_every_inclusion_proof_verifies_and_every_alteration_fails(
    size: int, data: st.DataObject
) -> None:
    tree = MerkleTree()
    compact = CompactRange()
    for i in range(size):
        tree.append(i.to_bytes(4, "big"))
        compact.append(i.to_bytes(4, "big"))
    assert tree.root() == compact.root()
    at = data.draw(st.integers(min_value=1, max_value=size), label="tree size")
    index = data.draw(st.integers(min_value=0, max_value=at - 1), label="leaf")
    root = tree.root(at)
    proof = tree.inclusion_proof(index, at)
    verify_inclusion(tree.leaf_hash(index), index, at, proof, root)
    if proof:
        which = data.draw(st.integers(min_value=0, max_value=len(proof) - 1))
        bit = data.draw(st.integers(min_value=0, max_value=255))
        bad = list(proof)
        bad[which] = bytes([proof[which][bit // 8] ^ (1 << (bit % 8))]).join(
            [proof[which][: bit // 8], proof[which][bit // 8 + 1 :]]
        )
        with pytest.raises(ProofError):
            verify_inclusion(tree.leaf_hash(index), index, at, bad, root)
        with pytest.raises(ProofError):
            verify_inclusion(tree.leaf_hash(index), index, at, proof[:-1], root)
    with pytest.raises(ProofError):
        verify_inclusion(tree.leaf_hash(index), index, at, [*proof, root], root)
    other = data.draw(st.integers(min_value=0, max_value=at - 1))
    if other != index and tree.leaf_hash(other) != tree.leaf_hash(index):
        with pytest.raises(ProofError):
            verify_inclusion(tree.leaf_hash(index), other, at, proof, root)


@settings(max_examples=150, deadline=None)
@given(st.integers(min_value=1, max_value=300), st.data())
def test_every_consistency_proof_verifies_and_every_alteration_fails(
    size: int, data: st.DataObject
) -> None:
    tree = MerkleTree(leaf_hash(i.to_bytes(4, "big")) for i in range(size))
    new = data.draw(st.integers(min_value=1, max_value=size), label="new size")
    old = data.draw(st.integers(min_value=1, max_value=new), label="old size")
    proof = tree.consistency_proof(old, new)
    verify_consistency(old, new, tree.root(old), tree.root(new), proof)
    if old == new:
        return
    which = data.draw(st.integers(min_value=0, max_value=len(proof) - 1))
    bad = list(proof)
    bad[which] = bytes([proof[which][0] ^ 1]) + proof[which][1:]
    with pytest.raises(ProofError):
        verify_consistency(old, new, tree.root(old), tree.root(new), bad)
    with pytest.raises(ProofError):
        verify_consistency(old, new, tree.root(old), tree.root(new), proof[:-1])
    with pytest.raises(ProofError):
        verify_consistency(old, new, tree.root(old), tree.root(new), [*proof, proof[0]])
    # A rewritten history: the new tree with one earlier leaf changed.
    changed = data.draw(st.integers(min_value=0, max_value=old - 1))
    forged = MerkleTree(
        leaf_hash(b"forged" if i == changed else i.to_bytes(4, "big")) for i in range(new)
    )
    with pytest.raises(ProofError):
        verify_consistency(
            old, new, tree.root(old), forged.root(), forged.consistency_proof(old, new)
        )


def test_truncate_undoes_appends() -> None:
    tree = MerkleTree(leaf_hash(x) for x in LEAVES[:5])
    for x in LEAVES[5:]:
        tree.append(x)
    tree.truncate(5)
    assert tree.size == 5
    assert tree.root() == ROOTS[5]
    for x in LEAVES[5:]:
        tree.append(x)
    assert tree.root() == ROOTS[8]
    tree.truncate(0)
    assert tree.root() == ROOTS[0]


def test_building_is_linear_and_fast() -> None:
    entries = [i.to_bytes(8, "big") * 40 for i in range(100_000)]
    started = time.perf_counter()
    tree = MerkleTree()
    for e in entries:
        tree.append(e)
    tree.root()
    elapsed = time.perf_counter() - started
    # Far above the 20,000 events/s the auditor's verify needs, even on a busy machine.
    assert 100_000 / elapsed > 60_000, f"{100_000 / elapsed:.0f} leaves/s"
