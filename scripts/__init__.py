"""Scripts of the repository (demo, screenshots, setup); a package so their shared helpers import."""
