"""The experiment kit: what reproduces the paper's experiments on top of the core.

The core (``advhooks.attacks``, ``step``, ``free``, ``losses``, ``monitor``, ``benchmark``, ``schedules``,
``evaluation``, ...) is what a user wraps a training loop with. The kit holds what runs whole experiments:

- :mod:`advhooks.kit.data` (:mod:`advhooks.kit.readers` for the files) and :mod:`advhooks.kit.models`: the
  datasets (the embedded digits, others read from disk) and the paper's models;
- :mod:`advhooks.kit.presets`: named (dataset, model, recipe) triples for the command line;
- :mod:`advhooks.kit.training`: the clean-training recipe that records R*(0), and a reference adversarial loop;
- :mod:`advhooks.kit.estimate`: the paper's ways to estimate ε*; :mod:`advhooks.kit.study`: its Tables 3 and 2
  on a user's setting; :mod:`advhooks.kit.connectivity`: its Figure 4 (each package draws its own figure);
- :mod:`advhooks.kit.demo`, :mod:`advhooks.kit.theory`, :mod:`advhooks.kit.checkpoints`: the demo, the linear
  model's theory, and reading other tools' checkpoints.

The core imports nothing from here (``tests/test_layers.py`` checks it).
"""
