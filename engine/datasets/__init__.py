"""Paired image-caption datasets: the built-in Shapes world and user folders."""
