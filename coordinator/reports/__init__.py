"""A run's report: the files of its run folder, and reading them back.

One module per concept: ``writer`` (the run folder and its cadence), ``report_json``
(report.json written and read back), ``csv_tables`` (rounds.csv, clients.csv), ``run_page``
(report.html), ``comparison_page`` (compare.html), ``html_parts`` (what the pages share),
``plots``, ``formatting`` (numbers as the pages show them), ``queries`` (questions asked of a
report), ``run_config`` (the run config a report holds) and ``atomic`` (atomic file writes).
Importing this package imports none of them (matplotlib is loaded only with the pages).
"""
