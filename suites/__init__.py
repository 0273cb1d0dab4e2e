"""Built-in kdeval suites; each family registers through the `kdeval.suites` entry-point group."""
