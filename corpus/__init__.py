"""The built-in corpus generator: synthetic instructional videos with spoken steps in several languages."""
