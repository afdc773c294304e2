"""The append-only Merkle tree of RFC 9162 §2.1 (the hashing of Certificate Transparency).

    leaf hash = SHA-256(0x00 || entry)
    node hash = SHA-256(0x01 || left || right)
    MTH({})   = SHA-256("")

Two structures, both built incrementally in O(n) for n leaves:

- `CompactRange` keeps only the roots of the perfect subtrees that make up the tree (at most
  log2(n) of them, a "stack"), enough for the tree head at the current size. The checkpointer
  uses it: memory does not grow with the log.
- `MerkleTree` keeps the hash of every complete subtree (2n hashes, 32 bytes each, in one
  `bytearray` per level), so the tree head at *any* earlier size, inclusion proofs and
  consistency proofs cost O(log n) hashes. The auditor's `verify` and `prove` use it.

Proof generation follows RFC 9162 §2.1.3.1 (PATH) and §2.1.4.1 (PROOF/SUBPROOF); verification
follows §2.1.3.2 and §2.1.4.2 literally. Verification never trusts sizes or lengths from the
proof: a hostile proof fails with `ProofError`, it cannot make us loop or allocate.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from gateway.errors import VerificationError

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
# A tree of more than 2**63 leaves cannot exist on one Kafka partition (offsets are int64).
MAX_TREE_SIZE = 1 << 63
# A proof for a tree of at most 2**63 leaves has at most 63 hashes (inclusion) or 64 (consistency).
MAX_PROOF_HASHES = 64

_sha256 = hashlib.sha256


class ProofError(VerificationError):
    """An inclusion or consistency proof does not verify against the given tree heads."""


def leaf_hash(entry: bytes) -> bytes:
    return _sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return _sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than n (n >= 2): where RFC 9162 splits a tree."""
    return 1 << ((n - 1).bit_length() - 1)


class CompactRange:
    """The perfect-subtree roots covering leaves [0, size): enough for the current tree head."""

    __slots__ = ("_stack", "size")

    def __init__(self) -> None:
        self.size = 0
        # Roots of the perfect subtrees, largest (leftmost) first; sizes are the set bits of size.
        self._stack: list[bytes] = []

    def append(self, entry: bytes) -> None:
        self.append_hash(leaf_hash(entry))

    def append_hash(self, hashed: bytes) -> None:
        stack = self._stack
        index = self.size
        while index & 1:
            hashed = _sha256(b"\x01" + stack.pop() + hashed).digest()
            index >>= 1
        stack.append(hashed)
        self.size += 1

    def root(self) -> bytes:
        if not self._stack:
            return EMPTY_ROOT
        # Fold right to left: the smallest subtree is the right-most child.
        result = self._stack[-1]
        for left in reversed(self._stack[:-1]):
            result = _sha256(b"\x01" + left + result).digest()
        return result


class MerkleTree:
    """Every complete subtree hash of an append-only log; roots and proofs at any size."""

    __slots__ = ("_levels", "size")

    def __init__(self, leaf_hashes: Iterable[bytes] = ()) -> None:
        self.size = 0
        # _levels[h] holds, back to back, the hashes of the complete subtrees of 2**h leaves.
        self._levels: list[bytearray] = [bytearray()]
        for hashed in leaf_hashes:
            self.append_hash(hashed)

    def append(self, entry: bytes) -> int:
        """Add one entry; returns its leaf index."""
        return self.append_hash(_sha256(b"\x00" + entry).digest())

    def append_hash(self, hashed: bytes) -> int:
        if len(hashed) != HASH_SIZE:
            raise ValueError(f"a leaf hash has {HASH_SIZE} bytes, not {len(hashed)}")
        levels = self._levels
        index = self.size
        levels[0] += hashed
        level = 0
        position = index
        while position & 1:
            below = levels[level]
            parent = _sha256(b"\x01" + below[-2 * HASH_SIZE :]).digest()
            level += 1
            if level == len(levels):
                levels.append(bytearray())
            levels[level] += parent
            position >>= 1
        self.size = index + 1
        return index

    def truncate(self, size: int) -> None:
        """Forget every leaf from `size` on (undo appends that turned out to be wrong)."""
        if not 0 <= size <= self.size:
            raise IndexError(f"cannot truncate a tree of {self.size} to {size}")
        for level, hashes in enumerate(self._levels):
            del hashes[(size >> level) * HASH_SIZE :]
        self.size = size

    def leaf_hash(self, index: int) -> bytes:
        if not 0 <= index < self.size:
            raise IndexError(f"leaf {index} is outside a tree of {self.size}")
        return bytes(self._levels[0][index * HASH_SIZE : (index + 1) * HASH_SIZE])

    def leaf_hashes(self, start: int = 0, end: int | None = None) -> bytes:
        """The leaf hashes of [start, end), concatenated."""
        end = self.size if end is None else end
        if not 0 <= start <= end <= self.size:
            raise IndexError(f"range [{start}, {end}) is outside a tree of {self.size}")
        return bytes(self._levels[0][start * HASH_SIZE : end * HASH_SIZE])

    def root(self, size: int | None = None) -> bytes:
        """The tree head (MTH) of the first `size` leaves; the whole tree by default."""
        size = self.size if size is None else size
        if not 0 <= size <= self.size:
            raise IndexError(f"no tree of size {size}: the log has {self.size} leaves")
        return self._mth(0, size)

    def _mth(self, lo: int, hi: int) -> bytes:
        n = hi - lo
        if n == 0:
            return EMPTY_ROOT
        if n & (n - 1) == 0 and lo % n == 0:
            level = n.bit_length() - 1
            index = lo >> level
            return bytes(self._levels[level][index * HASH_SIZE : (index + 1) * HASH_SIZE])
        k = _split(n)
        return _sha256(b"\x01" + self._mth(lo, lo + k) + self._mth(lo + k, hi)).digest()

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """RFC 9162 §2.1.3.1 PATH(index, D[size])."""
        size = self.size if size is None else size
        if not 0 <= index < size <= self.size:
            raise IndexError(f"no leaf {index} in a tree of size {size} (log has {self.size})")
        proof: list[bytes] = []
        lo, hi = 0, size
        # Walk down from the root; collect siblings, then reverse (the proof goes leaf upwards).
        while hi - lo > 1:
            k = _split(hi - lo)
            if index < lo + k:
                proof.append(self._mth(lo + k, hi))
                hi = lo + k
            else:
                proof.append(self._mth(lo, lo + k))
                lo = lo + k
        proof.reverse()
        return proof

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """RFC 9162 §2.1.4.1 PROOF(old_size, D[new_size])."""
        new_size = self.size if new_size is None else new_size
        if not 0 <= old_size <= new_size <= self.size:
            raise IndexError(
                f"no consistency proof from {old_size} to {new_size} (log has {self.size})"
            )
        if old_size == 0 or old_size == new_size:
            return []
        proof: list[bytes] = []
        lo, hi, m, complete = 0, new_size, old_size, True
        while True:
            n = hi - lo
            if m == n:
                if not complete:
                    proof.append(self._mth(lo, hi))
                break
            k = _split(n)
            if m <= k:
                proof.append(self._mth(lo + k, hi))
                hi = lo + k
            else:
                proof.append(self._mth(lo, lo + k))
                lo, m, complete = lo + k, m - k, False
        proof.reverse()
        return proof


def _check_hashes(proof: Sequence[bytes], what: str) -> None:
    if len(proof) > MAX_PROOF_HASHES:
        raise ProofError(f"{what} has {len(proof)} hashes; no valid proof has more than 64")
    for h in proof:
        if len(h) != HASH_SIZE:
            raise ProofError(f"{what} holds a hash of {len(h)} bytes instead of {HASH_SIZE}")


def root_from_inclusion_proof(leaf: bytes, index: int, size: int, proof: Sequence[bytes]) -> bytes:
    """RFC 9162 §2.1.3.2 steps 1-4: the root that `proof` leads to from `leaf` at `index`."""
    if not 0 <= index < size <= MAX_TREE_SIZE:
        raise ProofError(f"leaf index {index} is not inside a tree of size {size}")
    if len(leaf) != HASH_SIZE:
        raise ProofError(f"a leaf hash has {HASH_SIZE} bytes, not {len(leaf)}")
    _check_hashes(proof, "the inclusion proof")
    fn, sn = index, size - 1
    r = leaf
    for p in proof:
        if sn == 0:
            raise ProofError("the inclusion proof is longer than the tree is high")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("the inclusion proof is shorter than the tree is high")
    return r


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Raise ProofError unless `proof` shows leaf `index` of the tree of `size` is `leaf`."""
    if root_from_inclusion_proof(leaf, index, size, proof) != root:
        raise ProofError(
            f"the inclusion proof for leaf {index} does not lead to the root of tree size {size}"
        )


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """RFC 9162 §2.1.4.2: raise ProofError unless the old tree is a prefix of the new one."""
    if not 0 <= old_size <= new_size <= MAX_TREE_SIZE:
        raise ProofError(f"a tree of size {old_size} cannot grow into one of size {new_size}")
    if len(old_root) != HASH_SIZE or len(new_root) != HASH_SIZE:
        raise ProofError(f"tree heads have {HASH_SIZE} bytes")
    _check_hashes(proof, "the consistency proof")
    if old_size == new_size:
        if proof:
            raise ProofError("a consistency proof between equal sizes must be empty")
        if old_root != new_root:
            raise ProofError(f"two different roots for the same tree size {old_size}")
        return
    if old_size == 0:
        if proof:
            raise ProofError("a consistency proof from the empty tree must be empty")
        return
    # Step 1: an empty path cannot prove anything between different non-empty sizes.
    if not proof:
        raise ProofError("the consistency proof is empty")
    path = list(proof)
    # Step 2: when the old tree is a complete subtree, its root is the first node of the path.
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    # Step 4.
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # Step 5.
    fr = sr = path[0]
    # Step 6.
    for c in path[1:]:
        if sn == 0:
            raise ProofError("the consistency proof is longer than the tree is high")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    # Step 7.
    if sn != 0:
        raise ProofError("the consistency proof is shorter than the tree is high")
    if fr != old_root:
        raise ProofError(
            f"the consistency proof does not reproduce the old root of tree size {old_size}"
        )
    if sr != new_root:
        raise ProofError(
            f"the consistency proof does not reproduce the new root of tree size {new_size}"
        )
