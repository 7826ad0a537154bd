"""The local HTTP endpoint: loopback, a token, only the secrets assigned to it, bounded per connection.

``serve`` listens; ``protocol`` and ``limits`` handle connections; ``application`` wires ``middlewares``
(token, proxy-header refusal, security headers) to ``handlers``; ``audit`` logs every read; ``token``
creates or reads the token file; ``openapi.json`` documents every route."""
