import keel  # noqa: F401  (fails fast if the module is not installed)
