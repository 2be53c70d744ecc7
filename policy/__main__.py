"""Entry point of the authproxy policy pack: builds the pack from policies.POLICIES.

Pulumi runs this file (``pulumi preview --policy-pack policy``). Constructing the PolicyPack starts
the analyzer's gRPC server and blocks, so nothing else belongs here: the policies and their
validate functions are in policies.py, which the tests import.
"""

from pulumi_policy import EnforcementLevel, PolicyPack

from policies import PACK_NAME, POLICIES

PolicyPack(
    name=PACK_NAME,
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=POLICIES,
)
