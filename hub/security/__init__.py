"""Message security: test PKI, XMLDSig (signxml), CMS EnvelopedData, certificate validation.

Every failure is a `SecurityError` carrying the AppRec and ebMS codes the receiver answers with.
"""

from hub.security.errors import SecurityError

__all__ = ["SecurityError"]
