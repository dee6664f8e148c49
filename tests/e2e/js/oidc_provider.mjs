// A real OpenID provider for the single sign-on tests (tests/e2e/test_sso_*.py, tests/support/oidc.py):
// panva's oidc-provider, certified by the OpenID Foundation, with discovery, a JWKS of a fresh RSA key,
// signed ID tokens, PKCE, RP-initiated logout, and client-credentials JWT access tokens for the REST API.
// Its login and consent pages are the package's development interactions (any password is accepted
// for a known account). Accounts and their groups are read from a JSON file on every sign-in, so a
// test changes someone's groups by rewriting that file.
//   node oidc_provider.mjs '{"port": 0, "issuer": "...", "accountsFile": "...", "clients": [...],
//                            "clientGroups": {"ci": ["g"]}}'
import { generateKeyPairSync } from "node:crypto";
import { readFileSync } from "node:fs";
import Provider from "oidc-provider";

const config = JSON.parse(process.argv[2]);
const { privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: "jwk" }), kid: `key-${Date.now()}`, use: "sig", alg: "RS256" };

function accounts() {
  return JSON.parse(readFileSync(config.accountsFile, "utf8"));
}

const provider = new Provider(config.issuer, {
  clients: config.clients,
  jwks: { keys: [signingKey] },
  cookies: { keys: ["oidc-test-cookie-key"] },
  scopes: ["openid", "email", "profile", "groups", "api"],
  claims: {
    openid: ["sub"],
    email: ["email", "email_verified"],
    profile: ["name", "given_name", "family_name"],
    groups: ["groups"],
  },
  // The person's claims go into the ID token itself (as Entra, Okta and Keycloak can be set up to do).
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  async findAccount(ctx, id) {
    const account = accounts()[id];
    if (!account) return undefined;
    return { accountId: id, async claims() { return { sub: id, ...account }; } };
  },
  features: {
    devInteractions: { enabled: true },
    clientCredentials: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    resourceIndicators: {
      enabled: true,
      // Only the service-account clients get API tokens by default; the admin's own sign-in needs none.
      defaultResource: (ctx, client) => (client.grantTypes.includes("client_credentials") ? config.apiAudience : undefined),
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resource) => ({
        scope: "api",
        audience: resource,
        accessTokenTTL: 600,
        accessTokenFormat: "jwt",
        jwt: { sign: { alg: "RS256" } },
      }),
    },
  },
  async extraTokenClaims(ctx, token) {
    const groups = (config.clientGroups || {})[token.clientId];
    return groups ? { groups } : undefined;
  },
});

const server = provider.listen(config.port, "127.0.0.1", () => {
  console.log(`oidc provider ready on ${config.issuer}`);
});
process.on("SIGTERM", () => server.close(() => process.exit(0)));
