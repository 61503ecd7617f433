"""Small helpers shared by every layer: logging and loss-free file writes."""
