"""Training and evaluation data: dataset readers and synthetic forgeries."""
