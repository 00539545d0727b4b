"""Generate the notebook corpus of issue 10 (``tests/notebooks/*.ipynb`` and ``README.md``).

Each notebook is written the way scikit-learn teaching material is: a markdown explanation between short code
cells, imports at the top, datasets that ship with scikit-learn (no download). The first code cell loads the
extension; every other code cell starts with ``%%track``, which is how a user tracks a whole notebook.

Run ``python tests/notebooks/make_corpus.py`` to regenerate; the output is byte-for-byte the same every time
(cell ids are derived from the notebook's number and the cell's position, never random).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}
LANGUAGE_INFO = {"name": "python"}


@dataclass
class Notebook:
    """One notebook of the corpus: its file name, what it covers, the verdict expected from reproduce."""

    filename: str
    covers: str
    rules: str
    verdict: str
    cells: list[tuple[str, str]] = field(default_factory=list)

    def md(self, text: str) -> None:
        self.cells.append(("markdown", text.strip("\n")))

    def code(self, source: str, name: str | None = None) -> None:
        """A tracked code cell (``%%track`` is prepended, with ``--name`` when given)."""
        magic = "%%track" if name is None else f"%%track --name {name}"
        self.cells.append(("code", magic + "\n" + source.strip("\n")))

    def build(self) -> nbformat.NotebookNode:
        prefix = self.filename.split("_", 1)[0]
        cells = []
        first_code = True
        for index, (kind, source) in enumerate(self.cells):
            if kind == "markdown":
                cell = new_markdown_cell(source)
            else:
                if first_code:
                    # The extension is loaded first; the cell is then itself a plain (untracked) cell.
                    cells.append(new_code_cell("%load_ext nbmlops"))
                    cells[-1].id = f"nb{prefix}-load"
                    first_code = False
                cell = new_code_cell(source)
            cell.id = f"nb{prefix}-{index:02d}"
            cells.append(cell)
        nb = new_notebook(cells=cells, metadata={"kernelspec": KERNELSPEC, "language_info": LANGUAGE_INFO})
        nbformat.validate(nb)
        return nb


NOTEBOOKS: list[Notebook] = []


def notebook(filename: str, covers: str, rules: str, verdict: str) -> Notebook:
    nb = Notebook(filename, covers, rules, verdict)
    NOTEBOOKS.append(nb)
    return nb


# --------------------------------------------------------------------------------------------------------------
# 01 cross-validation
# --------------------------------------------------------------------------------------------------------------
nb = notebook(
    "01_cross_validation.ipynb",
    "cross_val_score and cross_validate (return_train_score, two scorers) on breast cancer; the dict turned into a "
    "DataFrame by rebinding `cv_results`",
    "score arrays -> `.mean`/`.std` metrics; cross_validate dict -> per-key metrics, `fit_time`/`score_time` marked "
    "as timings and excluded from reproduce (also as columns of the `cv_results` frame); `np.mean`/`np.std` numpy "
    "scalars as metrics; pipeline params only where they differ from defaults (`max_iter`)",
    "REPRODUCED",
)
nb.md("""
# Cross-validation

A single train/test split gives one number, and that number depends on which rows happened to land in the test
set. Cross-validation repeats the split several times and reports the whole distribution of scores, so we can see
both the expected performance and how much it varies.

We use the breast cancer dataset (569 tumours, 30 numeric features, a binary target) and a scaled logistic
regression.
""")
nb.code("""
import numpy as np
import pandas as pd
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score, cross_validate
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
""")
nb.md("""
## The data
""")
nb.code("""
X, y = load_breast_cancer(return_X_y=True)
print(f"{X.shape[0]} samples, {X.shape[1]} features")
print("class balance:", np.bincount(y))
""")
nb.md("""
## A model

Scaling is part of the pipeline, so that in every fold the scaler only ever sees that fold's training rows.
""")
nb.code("""
model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
model
""")
nb.md("""
## `cross_val_score`

With an integer `cv` and a classifier, scikit-learn uses stratified folds without shuffling. The result is one
accuracy per fold.
""")
nb.code("""
scores = cross_val_score(model, X, y, cv=5)
print("accuracy per fold:", scores.round(3))
""")
nb.md("""
The mean is the estimate of the generalisation performance; the standard deviation tells us how much it moves
from one split to the next.
""")
nb.code("""
mean_accuracy = np.mean(scores)
std_accuracy = np.std(scores)
print(f"accuracy: {mean_accuracy:.3f} +/- {std_accuracy:.3f}")
""")
nb.md("""
## Choosing the splitter

Passing a splitter object makes the strategy explicit. Shuffling needs a `random_state`, otherwise every
execution of the notebook would use different folds.
""")
nb.code("""
cv = StratifiedKFold(n_splits=5, shuffle=True, random_state=0)
shuffled_scores = cross_val_score(model, X, y, cv=cv)
print(f"shuffled folds: {shuffled_scores.mean():.3f} +/- {shuffled_scores.std():.3f}")
""")
nb.md("""
## `cross_validate`

`cross_validate` can evaluate several metrics at once, return the training scores too, and it reports how long
each fit and each scoring took. The result is a dictionary of arrays, one entry per fold.
""")
nb.code("""
cv_results = cross_validate(
    model, X, y, cv=cv, scoring=["accuracy", "roc_auc"], return_train_score=True
)
sorted(cv_results)
""")
nb.md("""
A DataFrame is easier to read. `fit_time` and `score_time` are in seconds; they change every time the notebook
runs, unlike the scores.
""")
nb.code("""
cv_results = pd.DataFrame(cv_results)
cv_results.round(3)
""")
nb.md("""
Comparing train and test scores tells us whether the model overfits: here both are close, so it does not.
""")
nb.code("""
print(f"train accuracy: {cv_results['train_accuracy'].mean():.3f}")
print(f"test accuracy:  {cv_results['test_accuracy'].mean():.3f}")
print(f"test ROC AUC:   {cv_results['test_roc_auc'].mean():.3f}")
print(f"mean fit time:  {cv_results['fit_time'].mean() * 1000:.1f} ms")
""")

# --------------------------------------------------------------------------------------------------------------
# 02 grid search
# --------------------------------------------------------------------------------------------------------------
nb = notebook(
    "02_grid_search.ipynb",
    "GridSearchCV and RandomizedSearchCV (loguniform, n_iter=8) over a scaler+SVC pipeline on breast cancer; "
    "best_score_/best_params_, held-out score, a cv_results_ frame without timing columns",
    "fitted searches -> `best_score_` metric and `best_params_` params; `param_grid` dict of lists as a param; "
    "estimator params only the non-defaults of each step; held-out `test_accuracy` metric",
    "REPRODUCED",
)
nb.md("""
# Tuning hyperparameters with a grid search

A support vector machine with an RBF kernel has two hyperparameters that matter: `C`, how strongly errors on the
training set are penalised, and `gamma`, how far the influence of a single sample reaches. Instead of guessing
them we try combinations, scoring each with cross-validation on the training set only, and keep a test set aside
to check the final choice.
""")
nb.code("""
import pandas as pd
from scipy.stats import loguniform
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import GridSearchCV, RandomizedSearchCV, train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
""")
nb.code("""
X, y = load_breast_cancer(return_X_y=True, as_frame=True)
X_train, X_test, y_train, y_test = train_test_split(X, y, stratify=y, random_state=42)
print(X_train.shape, X_test.shape)
""")
nb.md("""
## The pipeline

Naming the steps lets us address their parameters as `<step>__<parameter>`.
""")
nb.code("""
pipeline = Pipeline([("scaler", StandardScaler()), ("svc", SVC())])
""")
nb.md("""
## Grid search

Every combination of the grid is evaluated: 3 x 3 = 9 candidates, each with 3-fold cross-validation.
""")
nb.code("""
param_grid = {"svc__C": [0.1, 1, 10], "svc__gamma": [0.001, 0.01, 0.1]}
grid = GridSearchCV(pipeline, param_grid=param_grid, cv=3)
grid.fit(X_train, y_train)
print("best parameters:", grid.best_params_)
print(f"best cross-validated accuracy: {grid.best_score_:.3f}")
""")
nb.md("""
`cv_results_` holds the scores of every candidate. The timing columns are left out here; we only look at scores.
""")
nb.code("""
results = pd.DataFrame(grid.cv_results_)
columns = ["param_svc__C", "param_svc__gamma", "mean_test_score", "std_test_score", "rank_test_score"]
results = results[columns].sort_values("rank_test_score")
results.head()
""")
nb.md("""
The search refits the best candidate on the whole training set, so the fitted search can be scored directly on
the test set, which it has never seen.
""")
nb.code("""
test_accuracy = grid.score(X_test, y_test)
print(f"test accuracy of the best model: {test_accuracy:.3f}")
""")
nb.md("""
## Randomized search

A grid grows exponentially with the number of hyperparameters. A randomized search samples a fixed number of
candidates from distributions instead; a log-uniform distribution suits parameters that vary over orders of
magnitude. The sampling is seeded so the same candidates come back on every run.
""")
nb.code("""
param_distributions = {
    "svc__C": loguniform(1e-2, 1e2),
    "svc__gamma": loguniform(1e-4, 1e-1),
}
search = RandomizedSearchCV(
    pipeline, param_distributions=param_distributions, n_iter=8, cv=3, random_state=0
)
search.fit(X_train, y_train)
print("best parameters:", search.best_params_)
print(f"best cross-validated accuracy: {search.best_score_:.3f}")
""")
nb.code("""
random_test_accuracy = search.score(X_test, y_test)
print(f"grid search:       {grid.score(X_test, y_test):.3f}")
print(f"randomized search: {random_test_accuracy:.3f}")
""")

# --------------------------------------------------------------------------------------------------------------
# 03 column transformer
# --------------------------------------------------------------------------------------------------------------
nb = notebook(
    "03_column_transformer.ipynb",
    "a mixed-type frame from load_diabetes(as_frame=True, scaled=False) with a binned `age_group` and a string `sex` "
    "column; ColumnTransformer(StandardScaler + OneHotEncoder) + Ridge; r2/MSE on a held-out set, cross_val_score "
    "with KFold, a coefficient Series",
    "nested pipeline params (per step, non-defaults only: `handle_unknown`, `alpha`), never `steps`/`transformers` "
    "objects; column lists are params not data; frames as inputs/outputs with roles from names (`X_train` training, "
    "`X_test` evaluation); r2/mse metrics; `r2_scores.mean/std`",
    "REPRODUCED",
)
nb.md("""
# Preprocessing mixed columns with a `ColumnTransformer`

Real tables mix numeric and categorical columns, and each kind needs its own preprocessing: numeric columns are
standardised, categorical columns are one-hot encoded. A `ColumnTransformer` applies each transformer to its own
columns and concatenates the results, and inside a pipeline it is fitted on the training data only.

The diabetes dataset is all numeric, so we make it more realistic: `sex` becomes a string label and age is binned
into groups.
""")
nb.code("""
import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_diabetes
from sklearn.linear_model import Ridge
from sklearn.metrics import mean_squared_error, r2_score
from sklearn.model_selection import KFold, cross_val_score, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
""")
nb.code("""
df = load_diabetes(as_frame=True, scaled=False).frame
df["sex"] = df["sex"].map({1.0: "group_1", 2.0: "group_2"})
df["age_group"] = pd.cut(df["age"], bins=[0, 35, 50, 65, 100], labels=["<35", "35-50", "50-65", "65+"])
df = df.drop(columns="age")
df.head()
""")
nb.code("""
df.dtypes
""")
nb.md("""
## Features and target

`target` is a measure of disease progression one year after the baseline measurements.
""")
nb.code("""
numeric_columns = ["bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
categorical_columns = ["sex", "age_group"]
X = df[numeric_columns + categorical_columns]
y = df["target"]
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0)
""")
nb.md("""
## The preprocessor

`handle_unknown="ignore"` keeps the model working if a category appears at prediction time that the training set
did not contain.
""")
nb.code("""
preprocessor = ColumnTransformer([
    ("num", StandardScaler(), numeric_columns),
    ("cat", OneHotEncoder(handle_unknown="ignore"), categorical_columns),
])
model = make_pipeline(preprocessor, Ridge(alpha=1.0))
model.fit(X_train, y_train)
""")
nb.code("""
y_pred = model.predict(X_test)
r2 = r2_score(y_test, y_pred)
mse = mean_squared_error(y_test, y_pred)
print(f"R2 = {r2:.3f}, MSE = {mse:.0f}")
""")
nb.md("""
## Cross-validation of the whole pipeline

Because the preprocessing lives inside the pipeline, cross-validation refits it in every fold: no statistic of a
validation fold leaks into training.
""")
nb.code("""
kfold = KFold(n_splits=5, shuffle=True, random_state=0)
r2_scores = cross_val_score(model, X, y, cv=kfold, scoring="r2")
print(f"R2: {r2_scores.mean():.3f} +/- {r2_scores.std():.3f}")
""")
nb.md("""
## Inspecting the coefficients

The names of the transformed features tell us which coefficient belongs to which column or category.
""")
nb.code("""
feature_names = model[:-1].get_feature_names_out()
coefficients = pd.Series(model[-1].coef_, index=feature_names).sort_values()
coefficients.round(1)
""")

# --------------------------------------------------------------------------------------------------------------
# 04 hyperparameter loop
# --------------------------------------------------------------------------------------------------------------
nb = notebook(
    "04_hyperparameter_loop.ipynb",
    "hand-written loops: `for C in [0.01, 0.1, 1, 10]:` fitting LogisticRegression and appending test scores to "
    "`scores = []`; `for depth in [1, 2, 4, 8]:` fitting trees into `results = []` of dicts, then a frame; a plot "
    "of score vs C",
    "swept loop values -> one list param (`C = [0.01, 0.1, 1, 10]`, `depth`), never the last value; loop names "
    "`C`/`depth` are neither params nor metrics; `scores` appended in a loop -> metric series with steps; empty "
    "containers not params; numpy scalar from np.argmax/np.max; `colors`-free plot captured as a figure",
    "REPRODUCED",
)
nb.md("""
# A hyperparameter loop, by hand

Before reaching for `GridSearchCV` it helps to write the loop ourselves: fit one model per value of the
hyperparameter, score each on data it was not trained on, and look at how the score changes.

We use the wine dataset (178 wines, 13 chemical measurements, 3 cultivars).
""")
nb.code("""
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.datasets import load_wine
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier
""")
nb.code("""
X, y = load_wine(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, stratify=y, random_state=0)
""")
nb.md("""
## Regularisation strength of a logistic regression

`C` is the inverse of the regularisation strength: small values force small coefficients, large values let the
model fit the training data closely.
""")
nb.code("""
scores = []
for C in [0.01, 0.1, 1, 10]:
    model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=1000))
    model.fit(X_train, y_train)
    scores.append(model.score(X_test, y_test))
scores
""")
nb.code("""
best_index = np.argmax(scores)
best_score = np.max(scores)
print(f"best C: {[0.01, 0.1, 1, 10][best_index]} (test accuracy {best_score:.3f})")
""")
nb.code("""
fig, ax = plt.subplots(figsize=(5, 3))
ax.plot([0.01, 0.1, 1, 10], scores, marker="o")
ax.set_xscale("log")
ax.set_xlabel("C")
ax.set_ylabel("test accuracy")
ax.set_title("Logistic regression on wine")
fig.tight_layout()
""")
nb.md("""
## Depth of a decision tree

Here we keep both the training and the test accuracy for each depth, as a list of dictionaries that becomes a
DataFrame. A tree deep enough memorises the training set, so its training accuracy reaches 1.
""")
nb.code("""
results = []
for depth in [1, 2, 4, 8]:
    tree = DecisionTreeClassifier(max_depth=depth, random_state=0)
    tree.fit(X_train, y_train)
    results.append({
        "max_depth": depth,
        "train_accuracy": tree.score(X_train, y_train),
        "test_accuracy": tree.score(X_test, y_test),
    })
results_df = pd.DataFrame(results)
results_df
""")
nb.code("""
gap = results_df["train_accuracy"] - results_df["test_accuracy"]
print("overfitting gap per depth:", gap.round(3).tolist())
""")

# --------------------------------------------------------------------------------------------------------------
# 05 learning curve
# --------------------------------------------------------------------------------------------------------------
nb = notebook(
    "05_learning_curve.ipynb",
    "learning_curve of a scaled logistic regression on digits (ShuffleSplit, train_sizes=np.linspace(0.1, 1, 5)); "
    "mean/std per size; a matplotlib figure with a `colors` styling dict and fill_between",
    "`np.linspace(...)` of literals -> a param, not a dataset; `train_scores`/`test_scores` 2-D score arrays -> "
    "metrics, never tagged as training/evaluation data; `colors = {...}` of strings is not a param; the figure is "
    "an artifact",
    "REPRODUCED",
)
nb.md("""
# Learning curves

Would more data help? A learning curve answers that by training the model on growing subsets of the training set
and scoring each on a validation set. If the validation score still climbs at the largest size, more data is
likely to help; if the two curves have met, it will not, and a more flexible model is needed instead.
""")
nb.code("""
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import ShuffleSplit, learning_curve
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
""")
nb.md("""
The digits dataset: 1797 images of 8x8 pixels, ten classes. We keep the first 800 images so the notebook stays
fast.
""")
nb.code("""
digits = load_digits()
X, y = digits.data[:800], digits.target[:800]
print(X.shape)
""")
nb.code("""
model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=500))
cv = ShuffleSplit(n_splits=5, test_size=0.2, random_state=0)
train_sizes = np.linspace(0.1, 1.0, 5)
""")
nb.code("""
train_sizes_abs, train_scores, test_scores = learning_curve(
    model, X, y, train_sizes=train_sizes, cv=cv
)
print("training set sizes:", train_sizes_abs)
""")
nb.md("""
Each row of `train_scores` and `test_scores` is one training size, each column one split. We summarise the
splits by their mean and standard deviation.
""")
nb.code("""
train_mean, train_std = train_scores.mean(axis=1), train_scores.std(axis=1)
test_mean, test_std = test_scores.mean(axis=1), test_scores.std(axis=1)
print("validation accuracy per size:", test_mean.round(3))
""")
nb.code("""
colors = {"train": "tab:blue", "test": "tab:orange"}
fig, ax = plt.subplots(figsize=(6, 4))
ax.plot(train_sizes_abs, train_mean, marker="o", color=colors["train"], label="training score")
ax.fill_between(train_sizes_abs, train_mean - train_std, train_mean + train_std, color=colors["train"], alpha=0.2)
ax.plot(train_sizes_abs, test_mean, marker="o", color=colors["test"], label="validation score")
ax.fill_between(train_sizes_abs, test_mean - test_std, test_mean + test_std, color=colors["test"], alpha=0.2)
ax.set_xlabel("number of training samples")
ax.set_ylabel("accuracy")
ax.set_title("Learning curve")
ax.legend(loc="lower right")
fig.tight_layout()
""")
nb.md("""
The validation score is still rising at the right-hand end: with more images the model would improve.
""")
nb.code("""
final_gap = train_mean[-1] - test_mean[-1]
print(f"gap between training and validation accuracy at full size: {final_gap:.3f}")
""")

# --------------------------------------------------------------------------------------------------------------
# 06 validation curve
# --------------------------------------------------------------------------------------------------------------
nb = notebook(
    "06_validation_curve.ipynb",
    "validation_curve of a scaled SVC over `param_range = np.logspace(-3, 2, 6)` (gamma) on breast cancer, cv=5; "
    "best gamma via np.argmax; the under/overfitting plot on a log axis with a `colors` dict",
    "`np.logspace(-3, 2, 6)` -> a param (a list), not a dataset; 2-D `train_scores`/`test_scores` -> mean/std "
    "metrics, no data role; `best_gamma` numpy scalar metric/param; styling dict not a param; figure artifact",
    "REPRODUCED",
)
nb.md("""
# Validation curves

A learning curve varies the amount of data; a validation curve varies one hyperparameter. For an RBF support
vector machine, `gamma` sets how local each support vector's influence is: too small and the model is almost
linear (underfitting), too large and it draws a little island around every training point (overfitting).
""")
nb.code("""
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import validation_curve
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
""")
nb.code("""
X, y = load_breast_cancer(return_X_y=True)
model = make_pipeline(StandardScaler(), SVC())
""")
nb.md("""
Six values of `gamma`, evenly spaced on a log scale from 0.001 to 100.
""")
nb.code("""
param_range = np.logspace(-3, 2, 6)
train_scores, test_scores = validation_curve(
    model, X, y, param_name="svc__gamma", param_range=param_range, cv=5
)
""")
nb.code("""
train_mean = train_scores.mean(axis=1)
test_mean = test_scores.mean(axis=1)
for gamma, train, test in zip(param_range, train_mean, test_mean):
    print(f"gamma={gamma:g}: train {train:.3f}, validation {test:.3f}")
""")
nb.code("""
colors = {"train": "tab:blue", "test": "tab:orange"}
fig, ax = plt.subplots(figsize=(6, 4))
ax.errorbar(param_range, train_mean, yerr=train_scores.std(axis=1), color=colors["train"], label="training")
ax.errorbar(param_range, test_mean, yerr=test_scores.std(axis=1), color=colors["test"], label="validation")
ax.set_xscale("log")
ax.set_xlabel("gamma")
ax.set_ylabel("accuracy")
ax.set_title("Validation curve of an RBF SVM")
ax.legend()
fig.tight_layout()
""")
nb.md("""
The best value is where the validation score peaks; to its right the training score keeps rising while the
validation score falls.
""")
nb.code("""
best_gamma = param_range[np.argmax(test_mean)]
best_validation_accuracy = test_mean.max()
print(f"best gamma: {best_gamma:g} ({best_validation_accuracy:.3f})")
""")

# --------------------------------------------------------------------------------------------------------------
# 07 rebind then read
# --------------------------------------------------------------------------------------------------------------
nb = notebook(
    "07_scaling_rebind.ipynb",
    "standardising wine features in place of the raw ones: `X_train = scaler.fit_transform(X_train)` then reading "
    "the new `X_train`; a k-NN before/after scaling; `scores` rebound from a list to an array and read in the "
    "same cell",
    "inputs are names read before being bound (the raw `X_train` at cell start), outputs are names bound by the "
    "cell (the scaled `X_train` at cell end, although it existed before); lineage from the split cell through the "
    "scaling cell to the model cell; metrics `accuracy_raw`, `accuracy_scaled`, `mean_score`",
    "REPRODUCED",
)
nb.md("""
# Why scale features? (and overwriting variables)

k-nearest neighbours measures distances between samples, so a feature measured in large units dominates the
others. In the wine data, `proline` is in the hundreds while `hue` is around 1. We compare a k-NN on the raw
features with one on standardised features.

A common habit in notebooks is to overwrite the arrays with their scaled version. It is convenient, but it means
the name `X_train` holds different data before and after that cell.
""")
nb.code("""
import numpy as np
from sklearn.datasets import load_wine
from sklearn.model_selection import cross_val_score, train_test_split
from sklearn.neighbors import KNeighborsClassifier
from sklearn.preprocessing import StandardScaler
""")
nb.code("""
X, y = load_wine(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, stratify=y, random_state=42)
print("feature ranges:", X_train.min(axis=0).round(1)[:4], "...", X_train.max(axis=0).round(1)[:4], "...")
""")
nb.code("""
knn = KNeighborsClassifier(n_neighbors=5)
knn.fit(X_train, y_train)
accuracy_raw = knn.score(X_test, y_test)
print(f"accuracy on raw features: {accuracy_raw:.3f}")
""")
nb.md("""
Now the scaler is fitted on the training set only, and the same transformation is applied to the test set. The
cell overwrites `X_train` and `X_test`, then reads the new values to check them.
""")
nb.code("""
scaler = StandardScaler()
X_train = scaler.fit_transform(X_train)
X_test = scaler.transform(X_test)
print("training means:", X_train.mean(axis=0).round(2))
print("training stds: ", X_train.std(axis=0).round(2))
""")
nb.code("""
knn = KNeighborsClassifier(n_neighbors=5)
knn.fit(X_train, y_train)
accuracy_scaled = knn.score(X_test, y_test)
print(f"accuracy on scaled features: {accuracy_scaled:.3f} (was {accuracy_raw:.3f})")
""")
nb.md("""
The same pattern with scores: a list of cross-validation scores is turned into an array and summarised in the
same cell.
""")
nb.code("""
scores = list(cross_val_score(knn, X_train, y_train, cv=5))
scores = np.array(scores) * 100
mean_score = float(scores.mean())
print(f"cross-validated accuracy on the scaled training set: {mean_score:.1f}%")
""")

# --------------------------------------------------------------------------------------------------------------
# 08 metric name reused
# --------------------------------------------------------------------------------------------------------------
nb = notebook(
    "08_baselines_same_metric_name.ipynb",
    "three models on one breast cancer split, each cell writing `train_score`/`test_score` and `model`: a scaled "
    "logistic regression, a depth-1 tree, a most-frequent dummy; then the three compared by 5-fold CV",
    "the same metric name in several cells is compared per cell run (matched by cell id), never only by the last "
    "rolled-up value; `model` params per cell (non-defaults: `max_iter`, `max_depth`, `strategy`); a dict of "
    "numbers (`cv_means`) filled in a loop over a dict of estimators (`name`/`estimator` loop names are not params)",
    "REPRODUCED",
)
nb.md("""
# Always compare with a baseline

An accuracy of 0.9 sounds good until we learn that always predicting the majority class gives 0.63. This
notebook trains a real model, a deliberately weak one, and a dummy that ignores the features, and scores each the
same way.
""")
nb.code("""
import pandas as pd
from sklearn.datasets import load_breast_cancer
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier
""")
nb.code("""
X, y = load_breast_cancer(return_X_y=True, as_frame=True)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, stratify=y, random_state=0)
""")
nb.md("""
## A logistic regression
""")
nb.code("""
model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
model.fit(X_train, y_train)
train_score = model.score(X_train, y_train)
test_score = model.score(X_test, y_test)
print(f"logistic regression: train {train_score:.3f}, test {test_score:.3f}")
""")
nb.md("""
## A decision stump

A tree of depth one asks a single question about a single feature.
""")
nb.code("""
model = DecisionTreeClassifier(max_depth=1, random_state=0)
model.fit(X_train, y_train)
train_score = model.score(X_train, y_train)
test_score = model.score(X_test, y_test)
print(f"decision stump: train {train_score:.3f}, test {test_score:.3f}")
""")
nb.md("""
## The dummy baseline

`DummyClassifier(strategy="most_frequent")` always predicts the class that is most common in the training set.
Any model worth keeping must beat it clearly.
""")
nb.code("""
model = DummyClassifier(strategy="most_frequent")
model.fit(X_train, y_train)
train_score = model.score(X_train, y_train)
test_score = model.score(X_test, y_test)
print(f"dummy: train {train_score:.3f}, test {test_score:.3f}")
""")
nb.md("""
## The same comparison with cross-validation

One split can flatter or penalise a model by chance; five folds give a steadier ranking.
""")
nb.code("""
models = {
    "logistic regression": make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
    "decision stump": DecisionTreeClassifier(max_depth=1, random_state=0),
    "most frequent": DummyClassifier(strategy="most_frequent"),
}
cv_means = {}
for name, estimator in models.items():
    cv_means[name] = cross_val_score(estimator, X, y, cv=5).mean()
pd.Series(cv_means, name="mean CV accuracy").round(3)
""")

# --------------------------------------------------------------------------------------------------------------
# 09 unseeded estimators (the nondeterministic notebook)
# --------------------------------------------------------------------------------------------------------------
nb = notebook(
    "09_unseeded_models.ipynb",
    "the nondeterministic one: a seeded split, then DecisionTreeClassifier(), RandomForestClassifier(n_estimators=5) "
    "and DummyClassifier(strategy='stratified') without random_state, a noise column from np.random without a "
    "seed, and repeated train_test_split without random_state; predictions and scores change between executions",
    "nondeterminism tag `nbmlops.nondeterministic` naming the estimator or call (tree, forest, dummy, "
    "np.random.normal, train_test_split); changed `y_pred_*` output arrays are differences; the likely cause named "
    "from the tag; `split_scores` appended in a `for repeat in range(5)` loop -> a metric series",
    "NOT REPRODUCED (exit 4; first differing cell: the forest or dummy cell, or the tree cell if its ties break "
    "differently)",
)
nb.md("""
# Randomness in scikit-learn models

Many estimators use randomness: random forests draw bootstrap samples and random feature subsets, decision trees
break ties between equally good splits at random, a stratified dummy draws its predictions. Without a
`random_state` each execution gives a different model, and a notebook that reports one score cannot be rerun to
the same number.

This notebook leaves the seeds out on purpose, to see how much the results move.
""")
nb.code("""
import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.tree import DecisionTreeClassifier
""")
nb.md("""
The split itself is seeded, so that only the models are random.
""")
nb.code("""
X, y = load_breast_cancer(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=0)
""")
nb.code("""
tree = DecisionTreeClassifier()
tree.fit(X_train, y_train)
y_pred_tree = tree.predict(X_test)
tree_accuracy = accuracy_score(y_test, y_pred_tree)
print(f"decision tree: {tree_accuracy:.3f}")
""")
nb.code("""
forest = RandomForestClassifier(n_estimators=5)
forest.fit(X_train, y_train)
y_proba_forest = forest.predict_proba(X_test)[:, 1]
forest_auc = roc_auc_score(y_test, y_proba_forest)
forest_accuracy = forest.score(X_test, y_test)
print(f"random forest of 5 trees: accuracy {forest_accuracy:.3f}, ROC AUC {forest_auc:.3f}")
""")
nb.code("""
dummy = DummyClassifier(strategy="stratified")
dummy.fit(X_train, y_train)
y_pred_dummy = dummy.predict(X_test)
dummy_accuracy = accuracy_score(y_test, y_pred_dummy)
print(f"stratified dummy: {dummy_accuracy:.3f}")
""")
nb.md("""
A classic check of feature importances: add a column of pure noise and see whether the forest uses it. The noise
comes from numpy's global generator, which nothing has seeded.
""")
nb.code("""
noise = np.random.normal(size=(X_train.shape[0], 1))
X_train_noisy = np.hstack([X_train, noise])
forest_noisy = RandomForestClassifier(n_estimators=5).fit(X_train_noisy, y_train)
noise_importance = forest_noisy.feature_importances_[-1]
print(f"importance given to the noise column: {noise_importance:.3f}")
""")
nb.md("""
Finally the split: without `random_state`, each call of `train_test_split` puts different rows in the test set.
""")
nb.code("""
split_scores = []
for repeat in range(5):
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.3)
    split_scores.append(DecisionTreeClassifier(max_depth=3, random_state=0).fit(X_tr, y_tr).score(X_te, y_te))
print("test accuracy over five random splits:", np.round(split_scores, 3))
""")

# --------------------------------------------------------------------------------------------------------------
# 10 data cleaning: no metric, only output frames
# --------------------------------------------------------------------------------------------------------------
nb = notebook(
    "10_data_preparation.ipynb",
    "no metric at all: loading diabetes as a raw frame, renaming columns, checking missing values and duplicates, "
    "clipping outliers, derived features (bmi category, log ratio), one-hot encoding with pd.get_dummies; only "
    "DataFrames are produced",
    "no numeric scalar is bound, so no metric; output frames (`raw`, `clean`, `features`, `summary`) recorded as "
    "outputs and compared by content; column-name lists/dicts are params; the `clean` frame read then rebound "
    "in the clipping cell",
    "REPRODUCED (on output datasets only)",
)
nb.md("""
# Preparing a table for modelling

Before any model, the data has to be understood and cleaned. This notebook does only that: it ends with a feature
table ready for a later notebook to train on, and computes no score.
""")
nb.code("""
import numpy as np
import pandas as pd
from sklearn.datasets import load_diabetes
""")
nb.md("""
## Loading the raw values

`scaled=False` gives the measurements in their original units rather than the mean-centred, scaled version.
""")
nb.code("""
raw = load_diabetes(as_frame=True, scaled=False).frame
raw.head()
""")
nb.md("""
The six blood serum measurements are called `s1` ... `s6`; the dataset description tells us what they are.
""")
nb.code("""
column_names = {"s1": "tc", "s2": "ldl", "s3": "hdl", "s4": "tch", "s5": "ltg", "s6": "glucose",
                "target": "progression"}
clean = raw.rename(columns=column_names)
clean["sex"] = clean["sex"].map({1.0: "group_1", 2.0: "group_2"}).astype("category")
clean.dtypes
""")
nb.md("""
## Missing values and duplicates
""")
nb.code("""
print("missing values per column:")
print(clean.isna().sum().to_string())
print("duplicated rows:", clean.duplicated().sum())
""")
nb.md("""
## Outliers

Extreme values of the serum measurements are clipped to the 1st and 99th percentiles, which keeps every row but
limits the influence of a few extreme patients.
""")
nb.code("""
serum_columns = ["tc", "ldl", "hdl", "tch", "ltg", "glucose"]
lower = clean[serum_columns].quantile(0.01)
upper = clean[serum_columns].quantile(0.99)
clean[serum_columns] = clean[serum_columns].clip(lower=lower, upper=upper, axis=1)
clean[serum_columns].describe().round(1)
""")
nb.md("""
## Derived features

A body mass index category is easier to communicate than the raw value, and the ratio of total to HDL
cholesterol is a common clinical indicator.
""")
nb.code("""
clean["bmi_category"] = pd.cut(clean["bmi"], bins=[0, 18.5, 25, 30, 100],
                               labels=["underweight", "normal", "overweight", "obese"])
clean["log_tc_hdl_ratio"] = np.log(clean["tc"] / clean["hdl"])
clean[["bmi", "bmi_category", "tc", "hdl", "log_tc_hdl_ratio"]].head()
""")
nb.code("""
features = pd.get_dummies(clean.drop(columns="progression"), columns=["sex", "bmi_category"], dtype=float)
target = clean["progression"]
features.head()
""")
nb.code("""
summary = features.describe().T[["mean", "std", "min", "max"]].round(2)
summary
""")

# --------------------------------------------------------------------------------------------------------------
# 11 configuration only: no metric, no data output
# --------------------------------------------------------------------------------------------------------------
nb = notebook(
    "11_environment_setup.ipynb",
    "no metric and no data output: the first notebook of a course, checking library versions, setting "
    "scikit-learn's display config, writing down the experiment settings as literals and printing them; no "
    "dataset is loaded",
    "literal settings (`seed = 42`, `test_size = 0.25`, `cv_folds = 5`, strings, a dict of strings) are params, "
    "never metrics; version strings are not metrics; nothing is a dataset",
    "NOTHING TO COMPARE (exit 6)",
)
nb.md("""
# Setting up the course environment

Before the exercises, check that the libraries are installed and recent enough, and write down the settings
every later notebook will use. Nothing is trained here.
""")
nb.code("""
import platform
import sys

import matplotlib
import numpy
import pandas
import sklearn
""")
nb.code("""
print("Python      ", platform.python_version())
print("NumPy       ", numpy.__version__)
print("pandas      ", pandas.__version__)
print("scikit-learn", sklearn.__version__)
print("matplotlib  ", matplotlib.__version__)
""")
nb.md("""
The course needs Python 3.10 or newer.
""")
nb.code("""
assert sys.version_info >= (3, 10), "please install Python 3.10 or newer"
print("Python version is fine")
""")
nb.md("""
## Display settings

With `display="text"` estimators are shown as plain text rather than as an HTML diagram, which is easier to read
in a terminal or a diff.
""")
nb.code("""
sklearn.set_config(display="text")
print(sklearn.get_config()["display"])
""")
nb.md("""
## Experiment settings

These values are reused by every exercise, so results are comparable between notebooks.
""")
nb.code("""
seed = 42
test_size = 0.25
cv_folds = 5
scoring = "accuracy"
datasets = {"classification": "load_breast_cancer", "regression": "load_diabetes", "multiclass": "load_wine"}
""")
nb.code("""
print(f"random_state={seed}, test_size={test_size}, {cv_folds}-fold cross-validation scored by {scoring}")
for task, loader in datasets.items():
    print(f"{task:>15}: sklearn.datasets.{loader}()")
""")

# --------------------------------------------------------------------------------------------------------------
# 12 trees and ensembles
# --------------------------------------------------------------------------------------------------------------
nb = notebook(
    "12_trees_and_ensembles.ipynb",
    "a single tree (export_text), `for depth in [1, 2, 3, 5, None]:` into `depth_scores = []`, then a random forest "
    "and gradient boosting (seeded, n_estimators=30) compared by 5-fold CV on wine, feature importances as a "
    "Series, and bagging vs boosting on make_classification",
    "loop variable `depth` is not a param/metric and the swept depths are one list param; `depth_scores` -> metric "
    "series; ensembles' non-default params only (`n_estimators`, `max_depth`, `random_state`); CV arrays -> "
    "`.mean/.std`; `importances` Series as an output dataset, not training data",
    "REPRODUCED",
)
nb.md("""
# Decision trees and ensembles of trees

A single decision tree is easy to read but unstable: a small change in the data can change the whole tree. Random
forests average many trees grown on bootstrap samples; gradient boosting adds small trees one after another, each
correcting the errors of the previous ones. Both are usually far more accurate than a single tree.
""")
nb.code("""
import numpy as np
import pandas as pd
from sklearn.datasets import load_wine, make_classification
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.model_selection import cross_val_score, train_test_split
from sklearn.tree import DecisionTreeClassifier, export_text
""")
nb.code("""
wine = load_wine(as_frame=True)
X, y = wine.data, wine.target
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, stratify=y, random_state=0)
""")
nb.md("""
## One tree
""")
nb.code("""
tree = DecisionTreeClassifier(max_depth=2, random_state=0).fit(X_train, y_train)
print(export_text(tree, feature_names=list(X.columns)))
tree_accuracy = tree.score(X_test, y_test)
print(f"test accuracy: {tree_accuracy:.3f}")
""")
nb.md("""
How deep should it grow? `None` lets it grow until every leaf is pure.
""")
nb.code("""
depth_scores = []
for depth in [1, 2, 3, 5, None]:
    tree = DecisionTreeClassifier(max_depth=depth, random_state=0)
    depth_scores.append(cross_val_score(tree, X_train, y_train, cv=5).mean())
print("cross-validated accuracy per depth:", np.round(depth_scores, 3))
""")
nb.md("""
## Random forest and gradient boosting

Both are evaluated with the same 5-fold cross-validation. Thirty trees are enough for a dataset this small.
""")
nb.code("""
forest = RandomForestClassifier(n_estimators=30, random_state=0)
forest_scores = cross_val_score(forest, X_train, y_train, cv=5)
print(f"random forest:     {forest_scores.mean():.3f} +/- {forest_scores.std():.3f}")
""")
nb.code("""
boosting = GradientBoostingClassifier(n_estimators=30, max_depth=2, learning_rate=0.3, random_state=0)
boosting_scores = cross_val_score(boosting, X_train, y_train, cv=5)
print(f"gradient boosting: {boosting_scores.mean():.3f} +/- {boosting_scores.std():.3f}")
""")
nb.code("""
forest.fit(X_train, y_train)
forest_test_accuracy = forest.score(X_test, y_test)
importances = pd.Series(forest.feature_importances_, index=X.columns).sort_values(ascending=False)
print(f"random forest test accuracy: {forest_test_accuracy:.3f}")
importances.head(5).round(3)
""")
nb.md("""
## A harder, synthetic problem

`make_classification` builds a problem with a chosen number of informative and redundant features. Here most of
the 20 features are noise.
""")
nb.code("""
X_syn, y_syn = make_classification(n_samples=400, n_features=20, n_informative=4, n_redundant=2, random_state=0)
for name, estimator in [
    ("tree", DecisionTreeClassifier(random_state=0)),
    ("forest", RandomForestClassifier(n_estimators=30, random_state=0)),
    ("boosting", GradientBoostingClassifier(n_estimators=30, random_state=0)),
]:
    print(f"{name:>8}: {cross_val_score(estimator, X_syn, y_syn, cv=3).mean():.3f}")
""")

# --------------------------------------------------------------------------------------------------------------
# 13 regression metrics
# --------------------------------------------------------------------------------------------------------------
nb = notebook(
    "13_regression_metrics.ipynb",
    "regression metrics on diabetes: a mean baseline, LinearRegression and Ridge with r2/MSE/MAE/RMSE (np.sqrt), "
    "`for loss in ['squared_error', 'absolute_error', 'huber']:` of GradientBoostingRegressor, per-fold losses "
    "printed by `for loss in fold_losses:`, and make_regression as a sanity check",
    "r2/mse/mae metrics; `rmse = np.sqrt(mse)` numpy scalar metric; loop variable `loss` (a string in one loop, a "
    "number in another) is never a metric or param; the swept loss names one list param; `losses = {}` empty "
    "container not a param; `fold_losses` 1-D array -> `.mean/.std`",
    "REPRODUCED",
)
nb.md("""
# Metrics for regression

For a regression the question is how far the predictions are from the truth, and there are several ways to
average that distance:

- the **mean squared error** (MSE) punishes large errors heavily, and its square root (RMSE) is in the unit of
  the target;
- the **mean absolute error** (MAE) is less sensitive to a few large errors;
- **R2** compares the model with always predicting the mean: 1 is perfect, 0 is no better than the mean.
""")
nb.code("""
import numpy as np
from sklearn.datasets import load_diabetes, make_regression
from sklearn.dummy import DummyRegressor
from sklearn.ensemble import GradientBoostingRegressor
from sklearn.linear_model import LinearRegression, Ridge
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score
from sklearn.model_selection import KFold, cross_val_score, train_test_split
""")
nb.code("""
X, y = load_diabetes(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0)
""")
nb.md("""
## The baseline: predict the mean
""")
nb.code("""
baseline = DummyRegressor(strategy="mean").fit(X_train, y_train)
baseline_mse = mean_squared_error(y_test, baseline.predict(X_test))
baseline_r2 = r2_score(y_test, baseline.predict(X_test))
print(f"baseline: MSE {baseline_mse:.0f}, R2 {baseline_r2:.3f}")
""")
nb.md("""
## Linear models
""")
nb.code("""
linear = LinearRegression().fit(X_train, y_train)
y_pred = linear.predict(X_test)
mse = mean_squared_error(y_test, y_pred)
rmse = np.sqrt(mse)
mae = mean_absolute_error(y_test, y_pred)
r2 = r2_score(y_test, y_pred)
print(f"linear regression: RMSE {rmse:.1f}, MAE {mae:.1f}, R2 {r2:.3f}")
""")
nb.code("""
ridge = Ridge(alpha=0.1).fit(X_train, y_train)
ridge_r2 = r2_score(y_test, ridge.predict(X_test))
print(f"ridge: R2 {ridge_r2:.3f}")
""")
nb.md("""
## Choosing the loss of a model

Gradient boosting can minimise different losses. The absolute error and the Huber loss are robust to outliers in
the target.
""")
nb.code("""
losses = {}
for loss in ["squared_error", "absolute_error", "huber"]:
    gbr = GradientBoostingRegressor(loss=loss, n_estimators=50, max_depth=2, random_state=0)
    gbr.fit(X_train, y_train)
    losses[loss] = mean_absolute_error(y_test, gbr.predict(X_test))
for name, value in losses.items():
    print(f"{name:>15}: test MAE {value:.1f}")
""")
nb.md("""
## Errors per fold

Scikit-learn scorers follow "greater is better", so the squared error comes back negated.
""")
nb.code("""
kfold = KFold(n_splits=5, shuffle=True, random_state=0)
fold_losses = -cross_val_score(Ridge(alpha=0.1), X, y, cv=kfold, scoring="neg_mean_squared_error")
for loss in fold_losses:
    print(f"fold MSE: {loss:.0f}")
""")
nb.md("""
## A sanity check on synthetic data

On data generated by a linear model with little noise, a linear regression should reach an R2 close to 1.
""")
nb.code("""
X_syn, y_syn = make_regression(n_samples=200, n_features=5, noise=10.0, random_state=0)
synthetic_r2 = cross_val_score(LinearRegression(), X_syn, y_syn, cv=5, scoring="r2").mean()
print(f"R2 on synthetic linear data: {synthetic_r2:.3f}")
""")

# --------------------------------------------------------------------------------------------------------------
# 14 classification metrics
# --------------------------------------------------------------------------------------------------------------
nb = notebook(
    "14_classification_metrics.ipynb",
    "classification metrics on breast cancer: accuracy, precision, recall, f1, balanced accuracy, ROC AUC from "
    "predict_proba, confusion matrix, classification_report, a ROC curve figure (RocCurveDisplay); then an "
    "imbalanced make_classification where a dummy has high accuracy and zero f1",
    "accuracy/f1/roc_auc metrics (python floats and numpy floats); `confusion` 2-D int array is an output, not a "
    "metric; `y_pred`/`y_proba` outputs with evaluation role; the figure artifact; `threshold = 0.3` literal param",
    "REPRODUCED",
)
nb.md("""
# Metrics for classification

Accuracy is the share of correct predictions. It hides which mistakes the model makes, and on an imbalanced
problem it can be high for a useless model. Precision, recall, the F1 score and the area under the ROC curve tell
a more complete story.
""")
nb.code("""
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_breast_cancer, make_classification
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    RocCurveDisplay,
    accuracy_score,
    balanced_accuracy_score,
    classification_report,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
""")
nb.code("""
data = load_breast_cancer()
X_train, X_test, y_train, y_test = train_test_split(
    data.data, data.target, test_size=0.25, stratify=data.target, random_state=0
)
model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(X_train, y_train)
""")
nb.md("""
In this dataset class 1 is *benign*; we keep scikit-learn's convention that class 1 is the positive class.
""")
nb.code("""
y_pred = model.predict(X_test)
accuracy = accuracy_score(y_test, y_pred)
precision = precision_score(y_test, y_pred)
recall = recall_score(y_test, y_pred)
f1 = f1_score(y_test, y_pred)
print(f"accuracy {accuracy:.3f}, precision {precision:.3f}, recall {recall:.3f}, F1 {f1:.3f}")
""")
nb.code("""
confusion = confusion_matrix(y_test, y_pred)
print(confusion)
print(classification_report(y_test, y_pred, target_names=data.target_names))
""")
nb.md("""
## Ranking quality: the ROC curve

The ROC AUC uses the predicted probabilities rather than the hard predictions: it is the probability that a
random positive sample is ranked above a random negative one.
""")
nb.code("""
y_proba = model.predict_proba(X_test)[:, 1]
roc_auc = roc_auc_score(y_test, y_proba)
fig, ax = plt.subplots(figsize=(4, 4))
RocCurveDisplay.from_predictions(y_test, y_proba, ax=ax, name="logistic regression")
ax.plot([0, 1], [0, 1], linestyle="--", color="grey")
ax.set_title(f"ROC AUC = {roc_auc:.3f}")
fig.tight_layout()
""")
nb.md("""
Lowering the decision threshold trades precision for recall.
""")
nb.code("""
threshold = 0.3
y_pred_low = (y_proba >= threshold).astype(int)
recall_low = recall_score(y_test, y_pred_low)
precision_low = precision_score(y_test, y_pred_low)
print(f"threshold {threshold}: precision {precision_low:.3f}, recall {recall_low:.3f}")
""")
nb.md("""
## When accuracy misleads

With 90% of the samples in one class, predicting that class every time gives 90% accuracy, an F1 score of zero
for the minority class, and a balanced accuracy of 0.5.
""")
nb.code("""
X_imb, y_imb = make_classification(n_samples=1000, weights=[0.9], random_state=42)
X_tr, X_te, y_tr, y_te = train_test_split(X_imb, y_imb, stratify=y_imb, random_state=42)
dummy = DummyClassifier(strategy="most_frequent").fit(X_tr, y_tr)
dummy_accuracy = accuracy_score(y_te, dummy.predict(X_te))
dummy_f1 = f1_score(y_te, dummy.predict(X_te), zero_division=0)
dummy_balanced = balanced_accuracy_score(y_te, dummy.predict(X_te))
print(f"dummy: accuracy {dummy_accuracy:.3f}, F1 {dummy_f1:.3f}, balanced accuracy {dummy_balanced:.3f}")
""")
nb.code("""
imbalanced_model = LogisticRegression(class_weight="balanced", max_iter=1000).fit(X_tr, y_tr)
imbalanced_f1 = f1_score(y_te, imbalanced_model.predict(X_te))
imbalanced_balanced = balanced_accuracy_score(y_te, imbalanced_model.predict(X_te))
print(f"weighted logistic regression: F1 {imbalanced_f1:.3f}, balanced accuracy {imbalanced_balanced:.3f}")
print("mean predicted probability of the minority class:", np.mean(imbalanced_model.predict_proba(X_te)[:, 1]).round(3))
""")


# --------------------------------------------------------------------------------------------------------------
README_HEAD = """\
# Notebook corpus (issue 10)

Generated by `make_corpus.py` (`python tests/notebooks/make_corpus.py`; re-running it rewrites the same bytes).
Each notebook is course-style scikit-learn material on a dataset that ships with scikit-learn (no download): the
first code cell is `%load_ext nbmlops` and every other code cell starts with `%%track`. Every estimator and
splitter is seeded, except in `09_unseeded_models.ipynb`. Each runs in a few seconds with plain papermill.

One line per notebook: what it covers; the capture rules it exercises; the verdict `nbmlops reproduce` should give
for a run of it.

"""


def readme() -> str:
    lines = [README_HEAD]
    for nb in NOTEBOOKS:
        lines.append(f"- `{nb.filename}`: {nb.covers}. Rules: {nb.rules}. Expected verdict: **{nb.verdict}**.\n")
    return "".join(lines)


def main() -> int:
    for nb in NOTEBOOKS:
        nbformat.write(nb.build(), HERE / nb.filename)
    (HERE / "README.md").write_text(readme(), encoding="utf-8")
    print(f"wrote {len(NOTEBOOKS)} notebooks and README.md to {HERE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
