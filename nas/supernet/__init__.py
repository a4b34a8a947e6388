"""Weight-sharing supernets: train one network, evaluate any child of a search space in seconds."""
