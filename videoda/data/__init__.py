"""Dataset I/O: the synthetic generator, the dataset readers, the internal clip format and pair sampling."""
