"""The model lifecycle: alias moves and their audit, promotion, rollback, comparison, retraining, runs.

- :mod:`~inspectflow.lifecycle.audit`: every alias move, kept as registered-model tags ``audit.NNNNNN``.
- :mod:`~inspectflow.lifecycle.aliases`: list the versions, promote by hand, roll back.
- :mod:`~inspectflow.lifecycle.comparison`: the last pipeline runs side by side.
- :mod:`~inspectflow.lifecycle.render`: their text for a terminal; the CLI commands print it.
- :mod:`~inspectflow.lifecycle.retrain`: the retraining policy (a new data version; drift, when checked).
- :mod:`~inspectflow.lifecycle.runs`: the runs that did not finish, and marking abandoned ones KILLED.
"""
