"""Dataset loaders: each real on-disk layout -> a list of :class:`~tfmedseg.datasets.case.Case`."""
