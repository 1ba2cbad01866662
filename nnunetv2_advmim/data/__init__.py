"""Data: nnU-Net dataset folders and plans, unlabeled images, label budgets, input checks, the loaders of
semi-supervised training and pretraining, synthetic datasets."""
