"""AVLnet audio-visual retrieval: ResDAVEnet + gated embedding heads, MMS loss, retrieval metrics."""
