"""The paper's Tables 1-7 regenerated with ``dvc exp``: ``python -m videoda paper-tables``.

Every row of every table is one experiment of the pipeline: a few ``-S`` overrides of params.yaml (often just
``method=<name>``, ``conf/method/``) and the stage to reproduce up to. An experiment serves every row
that reads it (e.g. ``ours`` gives Table 1's "Ours", Table 3's VAT row from its ``vat`` model, Table 4's last
row), so each (experiment, seed) runs once. ``run`` queues the missing ones (``dvc exp run --queue``), runs the
queue (``dvc exp run --run-all``), then ``collect`` reads ``dvc exp show --json``, adds every finished run's
numbers to ``reports/paper_tables.json`` (the runs file, committed: seeds run in other sessions or on other
machines add up there) and renders ``reports/paper_tables.md`` from it (mean +- std and 95% CI over seeds of the
last checkpoint, the paper's numbers beside ours, each ordering the paper states as a paired difference) with
one bar chart per table.

DVC's run cache does the rest: stages whose effective inputs an experiment shares with an earlier one (the
data, source-only training, AdaptSegNet's warm-up under CBST*, CRST* and IAST, ...) are restored, not rerun.

The package, by job: ``specs`` (the rows and experiments, as literal tables), ``runner`` (``dvc exp`` and the
runs file), ``statistics`` (means, CIs, paired differences, verdicts), ``render`` (the markdown and charts).
"""

from videoda.paper_tables.render import write_report
from videoda.paper_tables.runner import collect, load_runs, run

__all__ = ["collect", "load_runs", "run", "write_report"]
