"""Route matching and path rewriting: the one place that decides which configured
route a request belongs to, so that the proxy (to forward) and authorize (to choose
the policy) always agree.

Pure: no I/O, no grpc, no web framework. Semantics follow Pomerium as Envoy runs it,
except where noted:

- Routes are tried in config order; the first whose host, port and path matcher
  accept the request wins, whether its `from` is an exact host or a wildcard. (Envoy,
  under Pomerium, picks an exact-host virtual host before any wildcard one and never
  falls back from it; the two differ only where a wildcard route overlaps a host that
  also has exact routes, and config order is how people read a config.)
- Hosts compare case-insensitively (ASCII only); `*.example.com` matches names with
  one or more extra labels, never `example.com` itself. Ports: see `authority`. A
  port-less `from` matches only a port-less Host or the scheme's default port
  (Pomerium's rule without its `match_any_incoming_port` flag, which accepts any).
- The request's scheme does not select routes (see `RouteTable.match`).
- `prefix` is a plain string prefix, as in Envoy: `/admin` matches `/admin`,
  `/admin/x` and `/administrator`. `path` is exact. `regex` must match the whole path
  (Python `re.fullmatch`; Envoy's RE2 safe_regex also matches the whole path). No
  matcher matches every path. The query string never takes part.
- Rewrites: see `rewrite`.
"""

from shared.routing.rewrite import rewrite_path
from shared.routing.table import Match, RouteTable

__all__ = ["Match", "RouteTable", "rewrite_path"]
