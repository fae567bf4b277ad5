// The real third-party OpenID Provider that Vallum's tests sign in against: panva's
// `oidc-provider` (certified OpenID Connect OP), configured for a test run. TEST ONLY.
//
//   node provider.mjs --port 0 --config provider.json      (or OIDC_PROVIDER_PORT / _CONFIG)
//
// Issuer: http://127.0.0.1:<port>. Plain http is deliberate: it listens on loopback
// only, and the tests need no certificate to reach it. Port 0 picks a free port; the
// line "oidc-provider ready on <url>" says which, once requests are served.
//
// Config (JSON; every key optional except clients and accounts):
//   {"clients": [{"client_id", "client_secret", "redirect_uris": [],
//                 "post_logout_redirect_uris": [], "id_token_signed_response_alg"?}],
//    "accounts": {"alice": {"password", "email", "name", "groups": [], "email_verified"?}},
//    "ttl": {"access_token": 60, "id_token": 60, "refresh_token": 86400,
//            "authorization_code": 60, "session": 86400},
//    "rotate_refresh_tokens": true, "offline_access_requires_prompt_consent": false}
//
// What differs from oidc-provider's defaults, and why:
// - devInteractions is off; /interaction/<uid> is our own login form (login + password
//   from `accounts`), and consent is granted automatically (loadExistingGrant) for every
//   configured client, so a browser or httpx only submits the login form once.
// - PKCE is required for every client (oidc-provider accepts only S256).
// - ID tokens carry the scope's claims (conformIdTokenClaims: false), `groups` included,
//   so the RP sees group changes on the next refresh.
// - offline_access yields a refresh token without prompt=consent (as at most IdPs);
//   "offline_access_requires_prompt_consent": true keeps oidc-provider's strict rule.
// - Refresh tokens rotate on every use by default (the strict case for an RP: it must
//   keep the new one); "rotate_refresh_tokens": false keeps them.
// - Signing keys (ES256 + RS256) are made at start. POST /__admin/rotate makes a new
//   pair and signs with it from then on, still publishing the old ones. The keystore of
//   a Provider is fixed when it is built, so rotation builds a new Provider over the
//   same in-memory storage (SharedMemoryAdapter) and swaps the request handler:
//   sessions, grants and refresh tokens survive it.
// - On Node 20 oidc-provider prints "Unsupported runtime" (it wants 22 LTS); it runs.
// - /__admin/* answers only loopback peers: health, rotate, accounts/<name>.
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';

import Provider from 'oidc-provider';

function option(flag, envName, fallback) {
  const index = process.argv.indexOf(flag);
  if (index !== -1 && index + 1 < process.argv.length) return process.argv[index + 1];
  return process.env[envName] ?? fallback;
}

function loadConfig() {
  const path = option('--config', 'OIDC_PROVIDER_CONFIG', undefined);
  if (path) return JSON.parse(fs.readFileSync(path, 'utf8'));
  if (process.env.OIDC_PROVIDER_CONFIG_JSON) return JSON.parse(process.env.OIDC_PROVIDER_CONFIG_JSON);
  throw new Error('no configuration: pass --config FILE or set OIDC_PROVIDER_CONFIG(_JSON)');
}

const config = loadConfig();
const port = Number(option('--port', 'OIDC_PROVIDER_PORT', '0'));
const accounts = new Map(Object.entries(config.accounts ?? {}));
const ttl = config.ttl ?? {};
const rotateRefreshTokens = config.rotate_refresh_tokens ?? true;
const offlineNeedsConsent = config.offline_access_requires_prompt_consent ?? false;
// Cookie signing keys outlive key rotation: sessions survive a swapped Provider.
const cookieKeys = [crypto.randomBytes(32).toString('base64url')];

function generateKey(alg) {
  const { privateKey } = alg === 'ES256'
    ? crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' })
    : crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  const members = alg === 'ES256'
    ? { crv: jwk.crv, kty: jwk.kty, x: jwk.x, y: jwk.y }
    : { e: jwk.e, kty: jwk.kty, n: jwk.n };
  // RFC 7638 thumbprint as kid, as oidc-provider itself would compute.
  const kid = crypto.hash('sha256', JSON.stringify(members), 'base64url');
  return { ...jwk, alg, use: 'sig', kid };
}

// Newest first: with several keys for one alg, oidc-provider signs with the first.
let signingKeys = [generateKey('ES256'), generateKey('RS256')];

const html = (value) => String(value).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function page(title, body) {
  return `<!DOCTYPE html><html><head><meta charset="utf-8"><title>${html(title)}</title>
<style>body{font-family:sans-serif;max-width:28em;margin:3em auto}label,input,button{display:block;margin:.4em 0}
.banner{background:#b00020;color:#fff;padding:.4em .8em}.error{color:#b00020}</style></head>
<body><p class="banner">Test OpenID Provider (oidc-provider) — for automated tests only</p>
${body}</body></html>`;
}

function accountClaims(id) {
  const account = accounts.get(id);
  return {
    sub: id,
    email: account.email,
    email_verified: account.email_verified ?? true,
    name: account.name,
    preferred_username: id,
    groups: account.groups ?? [],
  };
}

function providerConfiguration() {
  return {
    clients: (config.clients ?? []).map((client) => ({
      client_id: client.client_id,
      client_secret: client.client_secret,
      redirect_uris: client.redirect_uris,
      post_logout_redirect_uris: client.post_logout_redirect_uris ?? [],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
      id_token_signed_response_alg: client.id_token_signed_response_alg ?? 'RS256',
    })),
    adapter: SharedMemoryAdapter,
    jwks: { keys: signingKeys },
    cookies: { keys: cookieKeys },
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name', 'preferred_username', 'groups'],
      groups: ['groups'],
    },
    scopes: ['openid', 'offline_access', 'profile', 'email', 'groups'],
    responseTypes: ['code'],
    conformIdTokenClaims: false,
    pkce: { required: () => true },
    features: {
      devInteractions: { enabled: false },
      rpInitiatedLogout: {
        enabled: true,
        // One click is one too many for httpx: the page submits itself (logout=yes).
        logoutSource: async (ctx, form) => {
          const confirm = form.replace('</form>', '<input type="hidden" name="logout" value="yes"/></form>');
          ctx.body = page('Sign out', `<h1>Signing out…</h1>${confirm}
<button type="submit" form="op.logoutForm">Sign out</button>
<script>document.forms[0].submit()</script>`);
        },
        postLogoutSuccessSource: async (ctx) => {
          ctx.body = page('Signed out', '<h1>Signed out</h1>');
        },
      },
    },
    interactions: { url: async (ctx, interaction) => `/interaction/${interaction.uid}` },
    findAccount: async (ctx, id) => (accounts.has(id)
      ? { accountId: id, claims: async () => accountClaims(id) }
      : undefined),
    // Auto-consent: every configured client is first-party here; grant what it asks.
    loadExistingGrant: async (ctx) => {
      const { oidc } = ctx;
      const grantId = oidc.result?.consent?.grantId || oidc.session.grantIdFor(oidc.client.clientId);
      const grant = (grantId && await oidc.provider.Grant.find(grantId))
        || new oidc.provider.Grant({ clientId: oidc.client.clientId, accountId: oidc.session.accountId });
      grant.addOIDCScope([...oidc.requestParamScopes].join(' '));
      if (oidc.requestParamClaims) grant.addOIDCClaims([...oidc.requestParamClaims]);
      await grant.save();
      return grant;
    },
    rotateRefreshToken: () => rotateRefreshTokens,
    clientBasedCORS: () => false,
    ttl: {
      AccessToken: ttl.access_token ?? 60,
      IdToken: ttl.id_token ?? 60,
      AuthorizationCode: ttl.authorization_code ?? 60,
      RefreshToken: ttl.refresh_token ?? 86400,
      Session: ttl.session ?? 86400,
      Grant: ttl.refresh_token ?? 86400,
      Interaction: 600,
    },
  };
}

// Storage for every model, shared by each Provider built (rotation swaps Providers),
// so sessions, grants and tokens outlive a key rotation. Expiry as oidc-provider asks.
const storage = new Map();

class SharedMemoryAdapter {
  constructor(model) {
    this.model = model;
  }

  key(id) {
    return `${this.model}:${id}`;
  }

  async upsert(id, payload, expiresIn) {
    const expires = expiresIn ? Date.now() + expiresIn * 1000 : Infinity;
    storage.set(this.key(id), { payload, expires });
    if (payload.grantId) {
      const grantKey = `grant:${payload.grantId}`;
      storage.set(grantKey, { payload: [...(storage.get(grantKey)?.payload ?? []), this.key(id)], expires: Infinity });
    }
    if (payload.uid) storage.set(`uid:${this.model}:${payload.uid}`, { payload: id, expires });
    if (payload.userCode) storage.set(`userCode:${payload.userCode}`, { payload: id, expires });
  }

  async find(id) {
    const entry = storage.get(this.key(id));
    if (!entry) return undefined;
    if (entry.expires <= Date.now()) {
      storage.delete(this.key(id));
      return undefined;
    }
    return entry.payload;
  }

  async findByUid(uid) {
    const id = storage.get(`uid:${this.model}:${uid}`)?.payload;
    return id === undefined ? undefined : this.find(id);
  }

  async findByUserCode(userCode) {
    const id = storage.get(`userCode:${userCode}`)?.payload;
    return id === undefined ? undefined : this.find(id);
  }

  async consume(id) {
    const entry = storage.get(this.key(id));
    if (entry) entry.payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) {
    storage.delete(this.key(id));
  }

  async revokeByGrantId(grantId) {
    for (const key of storage.get(`grant:${grantId}`)?.payload ?? []) storage.delete(key);
    storage.delete(`grant:${grantId}`);
  }
}

let issuer;
let provider;
let handler;

function build() {
  provider = new Provider(issuer, providerConfiguration());
  provider.on('server_error', (ctx, error) => console.error('oidc-provider server_error:', error));
  provider.on('grant.error', (ctx, error) => console.error('oidc-provider grant.error:', error.error_detail ?? error.message, error.cause ?? ''));
  handler = provider.callback();
}

async function readForm(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

function send(res, status, type, body) {
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
  res.end(body);
}

const json = (res, status, value) => send(res, status, 'application/json', JSON.stringify(value));

function loginPage(uid, clientId, error, login = '') {
  const failure = error ? `<p class="error">${html(error)}</p>` : '';
  return page('Sign in', `<h1>Sign in to ${html(clientId)}</h1>${failure}
<form method="post" action="/interaction/${html(uid)}/login">
<label>Login <input name="login" value="${html(login)}" autofocus></label>
<label>Password <input name="password" type="password"></label>
<button type="submit">Sign in</button></form>`);
}

async function interaction(req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) return send(res, 400, 'text/plain', 'interaction mismatch');
  const clientId = details.params.client_id;
  if (details.prompt.name === 'login') {
    if (req.method === 'GET' && !action) return send(res, 200, 'text/html', loginPage(uid, clientId));
    if (req.method === 'POST' && action === 'login') {
      const form = await readForm(req);
      const login = form.get('login') ?? '';
      const account = accounts.get(login);
      if (!account || account.password !== form.get('password')) {
        return send(res, 401, 'text/html', loginPage(uid, clientId, 'Unknown login or wrong password.', login));
      }
      return provider.interactionFinished(req, res, { login: { accountId: login } }, { mergeWithLastSubmission: false });
    }
  }
  if (details.prompt.name === 'consent') {
    // loadExistingGrant grants everything, so this is a fallback for what it missed.
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: details.session.accountId, clientId });
    const missing = details.prompt.details;
    if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
    if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
    const grantId = await grant.save();
    return provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
  }
  return send(res, 400, 'text/plain', `unexpected ${req.method} for prompt ${details.prompt.name}`);
}

// oidc-provider drops offline_access unless prompt=consent is sent (OpenID Connect
// Core 1.0 section 11, read strictly). Like most IdPs, honour the scope alone: add the
// prompt, whose consent step is then granted at once by interaction().
function offlineWithConsent(url) {
  const parsed = new URL(url, 'http://placeholder');
  const scopes = (parsed.searchParams.get('scope') ?? '').split(' ');
  if (!scopes.includes('offline_access') || parsed.searchParams.has('prompt')) return url;
  parsed.searchParams.set('prompt', 'consent');
  return `${parsed.pathname}${parsed.search}`;
}

const LOOPBACK = new Set(['127.0.0.1', '::1', '::ffff:127.0.0.1']);

async function admin(req, res, path) {
  if (!LOOPBACK.has(req.socket.remoteAddress)) return json(res, 403, { error: 'loopback only' });
  const kids = () => signingKeys.map(({ kid, alg }) => ({ kid, alg }));
  if (req.method === 'GET' && path === 'health') return json(res, 200, { status: 'ok', issuer, keys: kids() });
  if (req.method === 'POST' && path === 'rotate') {
    signingKeys = [generateKey('ES256'), generateKey('RS256'), ...signingKeys];
    build();
    console.log(`oidc-provider rotated keys: now signing with ${signingKeys[0].kid} (ES256), ${signingKeys[1].kid} (RS256)`);
    return json(res, 200, { keys: kids() });
  }
  const match = /^accounts\/([^/]+)$/.exec(path);
  if (req.method === 'POST' && match) {
    const name = decodeURIComponent(match[1]);
    const chunks = [];
    for await (const chunk of req) chunks.push(chunk);
    const update = chunks.length ? JSON.parse(Buffer.concat(chunks).toString('utf8')) : {};
    accounts.set(name, { ...(accounts.get(name) ?? {}), ...update });
    return json(res, 200, { account: name, claims: accountClaims(name) });
  }
  return json(res, 404, { error: `no admin endpoint ${req.method} /__admin/${path}` });
}

async function dispatch(req, res) {
  if (!handler) return send(res, 503, 'text/plain', 'starting');
  const { pathname } = new URL(req.url, 'http://placeholder');
  if (pathname.startsWith('/__admin/')) return admin(req, res, pathname.slice('/__admin/'.length));
  const match = /^\/interaction\/([^/]+)(?:\/(login))?$/.exec(pathname);
  if (match) return interaction(req, res, match[1], match[2]);
  if (pathname === '/auth' && req.method === 'GET' && !offlineNeedsConsent) req.url = offlineWithConsent(req.url);
  return handler(req, res);
}

const server = http.createServer((req, res) => {
  dispatch(req, res).catch((error) => {
    console.error('oidc-provider harness error:', error);
    if (!res.headersSent) send(res, 500, 'text/plain', String(error?.message ?? error));
    else res.end();
  });
});

server.listen(port, '127.0.0.1', () => {
  issuer = `http://127.0.0.1:${server.address().port}`;
  build();
  console.log(`oidc-provider ready on ${issuer}`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    server.close();
    server.closeAllConnections();
    process.exit(0);
  });
}
