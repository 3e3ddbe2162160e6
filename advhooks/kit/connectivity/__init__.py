"""Mode connectivity between a clean and an adversarially trained model (the paper's Figure 4): the trained
Bézier curve and its measurements (:mod:`.curve`) and the figure (:mod:`.plot`)."""

from .curve import ConnectivityResult, CurveSettings, bezier_coefficients, connectivity, path_barrier, path_ridge
from .plot import plot_connectivity

__all__ = ["ConnectivityResult", "CurveSettings", "bezier_coefficients", "connectivity", "path_barrier", "path_ridge",
           "plot_connectivity"]
