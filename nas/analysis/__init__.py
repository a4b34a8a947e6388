"""Analysis of search and NetAdapt records: Pareto fronts, hypervolume, reference points, plots.

Computing (:mod:`.pareto`, pure numpy/pandas) is kept apart from drawing (:mod:`.plots`), so
results test by equality and the renderers stay thin.
"""

from nas.analysis.pareto import (
    ACCURACY_LATENCY,
    front_summary,
    hypervolume,
    nadir,
    non_dominated_sort,
    pareto_front,
    valid_rows,
)
from nas.analysis.plots import plot_netadapt_history, plot_pareto
from nas.analysis.references import DEFAULT_REFERENCES, reference_latencies
from nas.analysis.runs import load_history, load_trials

__all__ = [
    "ACCURACY_LATENCY", "DEFAULT_REFERENCES", "front_summary", "hypervolume", "load_history", "load_trials",
    "nadir", "non_dominated_sort", "pareto_front", "plot_netadapt_history", "plot_pareto",
    "reference_latencies", "valid_rows",
]
