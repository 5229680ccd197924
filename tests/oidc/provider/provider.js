// A real OpenID provider on loopback for cellgate's sign-in tests (panva/oidc-provider).
//
// Environment:
//   PORT            port to listen on (127.0.0.1)
//   CLIENT_ID       the one client (default "cellgate")
//   CLIENT_SECRET   its secret (client_secret_basic)
//   REDIRECT_URIS   comma-separated redirect URIs registered for it (the gateways' /oauth/callback)
//   ACCOUNTS_FILE   JSON {login: {preferred_username, email, email_verified, groups, ...}}, read on
//                   every sign-in so a test can change a user's groups between two sign-ins
//   ALIAS_PATH      if set (e.g. "/other"), ISSUER + ALIAS_PATH + "/.well-known/openid-configuration"
//                   serves the discovery document with issuer ISSUER + ALIAS_PATH and without the
//                   `iss` authorization response parameter: to a gateway configured with that
//                   issuer, a provider whose tokens come from another issuer (it must refuse them)
//
// Interactions are oidc-provider's development interactions: a login form (any login, any
// password: the login is the account id) and a consent form, which the tests submit with httpx.
// Prints "ready <issuer>" on stdout once listening.

import { generateKeyPairSync } from 'node:crypto';
import { readFileSync } from 'node:fs';

import Provider from 'oidc-provider';

const port = Number(process.env.PORT || 0);
const issuer = `http://127.0.0.1:${port}`;
const clientId = process.env.CLIENT_ID || 'cellgate';
const clientSecret = process.env.CLIENT_SECRET || 'cellgate-test-secret';
const redirectUris = (process.env.REDIRECT_URIS || '').split(',').filter(Boolean);
const accountsFile = process.env.ACCOUNTS_FILE;
const aliasPath = process.env.ALIAS_PATH;

function accounts() {
  if (!accountsFile) return {};
  return JSON.parse(readFileSync(accountsFile, 'utf8'));
}

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: 'test-rs256', use: 'sig', alg: 'RS256' };

const configuration = {
  clients: [{
    client_id: clientId,
    client_secret: clientSecret,
    redirect_uris: redirectUris,
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  jwks: { keys: [signingKey] },
  pkce: { methods: ['S256'], required: () => true },
  scopes: ['openid', 'profile', 'email', 'groups'],
  claims: {
    openid: ['sub'],
    profile: ['preferred_username', 'name'],
    email: ['email', 'email_verified'],
    groups: ['groups'],
  },
  // the claims go into the ID token itself (not only the userinfo endpoint)
  conformIdTokenClaims: false,
  features: { devInteractions: { enabled: true } },
  cookies: { keys: ['cellgate-test-cookie-key'] },
  async findAccount(ctx, sub) {
    return {
      accountId: sub,
      async claims() {
        const found = accounts()[sub] || {};
        return { preferred_username: sub, ...found, sub };
      },
    };
  },
};

const provider = new Provider(issuer, configuration);

if (aliasPath) {
  const discovery = '/.well-known/openid-configuration';
  provider.use(async (ctx, next) => {
    const aliased = ctx.path === `${aliasPath}${discovery}`;
    if (aliased) ctx.path = discovery;
    await next();
    if (aliased && ctx.body) {
      const body = typeof ctx.body === 'string' ? JSON.parse(ctx.body) : { ...ctx.body };
      body.issuer = `${issuer}${aliasPath}`;
      delete body.authorization_response_iss_parameter_supported;
      ctx.body = body;
    }
  });
}

const server = provider.listen(port, '127.0.0.1', () => {
  process.stdout.write(`ready ${issuer}\n`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
