"""hpi's version: a leaf module, so that cache keys and records can name it without importing the package."""

__version__ = "0.1.0"
