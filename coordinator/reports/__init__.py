"""A run's report: the files of its run folder, and reading them back."""
