"""Pure logic, by subject. Nothing here talks to the API or imports a framework; every function
takes the observed objects, settings and time as arguments and returns values.

The policy decision (webhook, reconciler and CLI take the same one):
    selection (which policy governs a Deployment), intent (what it must carry), merge,
    ownership (who set what, from managedFields), admitted (fields written at admission),
    compliance (does it carry it), budget (its termination budget), l7_backends (whether an L7
    hop sends to it), decision (the one action),
    admission (an AdmissionReview in, a response out), status (a policy's status), rbac (the
    sidecar's Role and RoleBinding in a namespace).
The readiness gate:
    readiness (the condition a pod should carry).
Shutdown, as observed:
    shutdown (hold reports and terminations into late traffic and recommendations),
    report_trust (which reports are believed), report_ledger (which reports never came),
    learning (the learned delay).
The operator's own health:
    retry (backoff per key), stall (what held the event loop).
"""
