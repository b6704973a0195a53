"""Data shipped with blindscore: the German credit data set and the model trained on it."""
