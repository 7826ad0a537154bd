"""The local HTTP endpoint: loopback, a token, only the secrets assigned to it, bounded per connection.

``serve`` listens (over ``agent.core.serving``, with ``protocol``'s metrics and log for bad requests);
``application`` wires ``middlewares`` (``limits``' Host check and proxy-header refusal, the token, security
headers) to ``handlers``; ``audit`` logs every read; ``token`` creates or reads the token file;
``openapi.json`` documents every route."""
