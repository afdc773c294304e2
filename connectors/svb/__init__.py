"""SVB sandbox: an organisation that joins through the generic provider API, with no connector."""
