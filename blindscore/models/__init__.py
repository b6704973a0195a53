"""Scoring models the bureau evaluates blind: the contract, feature specs, band policies, model types."""
