"""scikit-learn estimator compatibility of the meta models (``check_estimator`` suite).

The checks feed plain arrays (all columns are features) and, in a few checks, DataFrames with
generic column names; the table-specific behaviour is tested in ``test_meta_model.py``.

Expected failures, each for a documented design decision:

* ``check_regressors_train`` (MetaRegressor): the check regresses a standardised target with
  values far outside [0, 1] and requires R^2 > 0.5; MetaRegressor predicts IoU_adj and clips
  every prediction to [0, 1] (issue 3), so it cannot fit such a target.
"""

from sklearn.utils.estimator_checks import parametrize_with_checks

from napari_metaseg.core.meta_model import MetaClassifier, MetaRegressor

CLIPPED = (
    "predictions are clipped to [0, 1] (the IoU_adj range), while this check regresses a "
    "standardised target outside that range"
)


def _expected_failures(estimator):
    if isinstance(estimator, MetaRegressor):
        return {"check_regressors_train": CLIPPED}
    return {}


ESTIMATORS = [
    MetaClassifier(kind="lasso", random_state=0),
    MetaClassifier(kind="logistic", random_state=0),
    MetaClassifier(kind="gbm", random_state=0),
    MetaRegressor(kind="linear", random_state=0),
    MetaRegressor(kind="lasso", random_state=0),
    MetaRegressor(kind="gbm", random_state=0),
]


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=_expected_failures)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
