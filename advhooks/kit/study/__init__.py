"""The ε* study (the paper's Table 3) and the FGSM instability threshold (its Table 2), on a user's setting.

A study crosses model widths with training-set fractions. Each *unit* of work is one (width, fraction, seed):
a clean benchmark R*(0) trained on that fraction of the training set (drawn once with the split seed, not the
run seed: every seed sees the same samples) and an ε* estimate of the chosen method against it; with
``check_grid`` the first seed of each configuration also runs the grid (training from scratch at each ε).
With ``fgsm_eps`` each configuration also gets the FGSM probe: plain FGSM training (no random start) at
increasing ε until :class:`~advhooks.diagnostics.CatastrophicOverfittingDetector` fires; the paper reports
ε* below that unstable ε.

Units are independent and each is a JSON file in ``units_dir`` when one is given (the grid check's run
records, with their early-stopped weights, in a ``grid-...`` folder beside it): a unit whose file exists
is read instead of run, so a study resumes after an interruption and can be spread over processes or
machines (``shard=(i, n)`` runs every n-th unit; rerunning without ``shard`` over the gathered files only
combines). :func:`summarise` turns the units into one row per configuration:

- R*(0): the mean over seeds; its s.e. combines the test set's sampling error (common to every seed: one test
  set) with the seeds' spread (``sqrt(mean se² + var/k)``).
- ε*: the geometric mean of the seeds' estimates, with a band on the log scale (ε* and its band stay positive):
  its half-widths in ln ε* are the larger of t·sd/√k (Student's t with k − 1 degrees of freedom: the spread over
  seeds holds every source of noise) and the seeds' own mean half-widths (a floor when there are few seeds; not
  divided by √k, because R*(0)'s test-set error, part of every seed's band, is shared by all of them).
- the customary ε's ratio to ε* with the band carried through.

:func:`compare` says, for configurations that differ in one factor only, whether their bands overlap.

One idea per module: :mod:`.settings` (the study and its :class:`Unit` of work), :mod:`.store` (units on
disk), :mod:`.fgsm` (the FGSM probe), :mod:`.run` (running a shard), :mod:`.summary` (rows, comparisons,
the table).
"""

from .fgsm import fgsm_threshold
from .run import run_study
from .settings import STUDY_SCHEMA, StudySettings, Unit, finetune_epochs_of
from .summary import StudyRow, compare, format_study, summarise

__all__ = ["STUDY_SCHEMA", "StudyRow", "StudySettings", "Unit", "compare", "fgsm_threshold", "finetune_epochs_of",
           "format_study", "run_study", "summarise"]
