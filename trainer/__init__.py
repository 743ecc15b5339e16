"""Training and evaluation of avalign models: the generic trainer and one package per task (exports live in serving/)."""
