"""Sluice on one machine: embedded AWS (moto), the template's functions in-process, a real model
behind the SageMaker endpoint contract, and an emulated Bedrock. Started by `make local`."""
