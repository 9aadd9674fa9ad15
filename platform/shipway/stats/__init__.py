"""Statistics: pure numpy and scipy, frames and arrays in, numbers out.

`divergence` (PSI, KS, chi²), `drift` (reference profiles of a training set, live windows
compared with them) and `metrics` (model metrics on the same rows and their paired bootstrap).
Layer 2, a leaf: may import nothing of Shipway's but `shipway.names`. The model servers load
`drift` and `divergence` too, so nothing here may need more than numpy, scipy and pandas.
"""
