"""Approvals by operators: a workflow asks (and waits on a Step Functions task token), an operator decides.

Generic over what is approved: batch transform jobs today, training jobs and endpoint deployments next.
The task token stays in the approvals table and is never returned by the API.
"""
