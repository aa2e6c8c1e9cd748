"""Published reference: learned RAFs of the RAFT checkpoint released with the paper.

Source: Haishuo Fang, Ji-Ung Lee, Nafise Sadat Moosavi, Iryna Gurevych.
"Transformers with Learnable Activation Functions". Findings of EACL 2023,
arXiv:2208.14111. Coefficients of the authors' pre-trained RAFT checkpoint, as recovered
from the pickled ``Rational`` objects in the history of the authors' public repository
(UKPLab/2022-RAFT, commit 28aa7b0, ``pkl_files/pretrained/full_data_pretrained_49.pkl``),
rounded to 4 significant digits.

Form (rational_activations "version A", degrees (5, 4), the same as ``raft.rational``)::

    F(x) = (a0 + a1 x + ... + a5 x^5) / (1 + |b1||x| + |b2| x^2 + |b3||x|^3 + |b4| x^4)

Keys follow this package's naming (``raft.modeling.rational_modules``): the paper's
1-based ``layer_1`` ... ``layer_12`` are ``layer.0`` ... ``layer.11`` here. The pooler RAF
gets no gradient in MLM-only pretraining, so it equals its GELU initialisation.

These numbers are a *published reference* for comparison plots only; they are copied here
as literals so that nothing reads outside the repository at run time.
"""

from __future__ import annotations

CITATION = (
    "Fang, Lee, Moosavi, Gurevych (2023), Transformers with Learnable Activation Functions, "
    "Findings of EACL 2023, arXiv:2208.14111 - authors' released RAFT checkpoint "
    "(UKPLab/2022-RAFT, commit 28aa7b0)"
)
LABEL = "published RAFT checkpoint (Fang et al. 2023)"

# GELU initialisation the authors used (least-squares fit on [-3, 3]).
GELU_INIT: dict[str, list[float]] = {
    "numerator": [-0.0012423594497499122, 0.5080497063245629, 0.41586363182937475,
                  0.13022718688035761, 0.024355900098993424, 0.00290283948155535],
    "denominator": [-0.06675015696494944, 0.17927646217001553, 0.03746682605496631,
                    1.6561610853276082e-10],
}

PUBLISHED_PRETRAINED_RAFS: dict[str, dict[str, list[float]]] = {
    "layer.0": {  # paper: layer_1
        "numerator": [-0.07382, 0.108, -0.3815, 0.6648, 0.1666, -0.04692],
        "denominator": [-2.299, 3.051, 0.9489, 0.3514],
    },
    "layer.1": {  # paper: layer_2
        "numerator": [-0.05061, 0.1619, -0.1918, 0.6487, 0.1062, -0.06129],
        "denominator": [-1.692, 2.717, 1.074, 0.04323],
    },
    "layer.2": {  # paper: layer_3
        "numerator": [-0.09204, -0.05374, -0.2834, -0.3081, 0.1235, 0.03751],
        "denominator": [-0.2015, 3.954, 0.03282, -0.00355],
    },
    "layer.3": {  # paper: layer_4
        "numerator": [-0.1432, -0.006223, -0.4572, -0.2464, 0.2605, 0.04176],
        "denominator": [-0.5285, 3.054, 0.4937, 0.1269],
    },
    "layer.4": {  # paper: layer_5
        "numerator": [-0.06174, -0.197, -0.2461, -0.3457, 0.07957, 0.03775],
        "denominator": [3.405, 2.653, -0.006411, -0.003166],
    },
    "layer.5": {  # paper: layer_6
        "numerator": [-0.08845, -0.09581, -0.319, -0.3401, 0.1337, 0.04114],
        "denominator": [0.534, 3.719, 0.1309, 0.01288],
    },
    "layer.6": {  # paper: layer_7
        "numerator": [-0.08493, -0.1059, -0.3084, -0.3724, 0.1183, 0.03965],
        "denominator": [-1.106, 3.551, 0.0982, 0.006497],
    },
    "layer.7": {  # paper: layer_8
        "numerator": [-0.1002, -0.06428, -0.3669, -0.3537, 0.1637, 0.0385],
        "denominator": [-0.6336, 3.721, -0.2679, -0.01404],
    },
    "layer.8": {  # paper: layer_9
        "numerator": [-0.08485, -0.07776, -0.2511, -0.3219, 0.1237, 0.03434],
        "denominator": [0.7165, -3.445, -0.04487, -0.01139],
    },
    "layer.9": {  # paper: layer_10
        "numerator": [-0.05676, -0.1578, -0.148, -0.3704, 0.0902, 0.03303],
        "denominator": [2.739, 2.631, -0.01578, 0.004799],
    },
    "layer.10": {  # paper: layer_11
        "numerator": [-0.1359, -0.003345, -0.4425, -0.08852, 0.1857, 0.02122],
        "denominator": [-0.6712, 3.162, -0.01964, 0.005695],
    },
    "layer.11": {  # paper: layer_12
        "numerator": [-0.027, 0.177, -0.004721, 0.4315, 0.07457, -0.02907],
        "denominator": [-1.722, 2.446, 0.1316, -0.02463],
    },
    "pooler": {  # paper: pooler
        "numerator": [-0.001242, 0.508, 0.4159, 0.1302, 0.02436, 0.002903],
        "denominator": [-0.06675, 0.1793, 0.03747, 1.656e-10],
    },
}


def published_rafs() -> dict[str, dict[str, list[float]]]:
    """A copy of the published pre-trained RAF coefficients, keyed ``layer.0`` ... ``pooler``."""
    return {k: {"numerator": list(v["numerator"]), "denominator": list(v["denominator"])}
            for k, v in PUBLISHED_PRETRAINED_RAFS.items()}
