"""BRP sandbox: where a test citizen is registered (Haal Centraal "BRP Personen bevragen" style).

The gateway asks it which municipality to ask for a citizen (gateway.federation.brp); it is
not an organisation in the bundle.
"""
