"""hpi tune."""
