"""The apps on top of the library: the demo driver and its report."""
