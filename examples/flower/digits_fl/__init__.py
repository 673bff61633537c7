"""A small Flower app recorded by edgescope: logistic regression on scikit-learn's digits."""
