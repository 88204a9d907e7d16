// A real OpenID provider for Weft's single sign-on tests: oidc-provider (OpenID Certified)
// with its development login and consent pages, listening on 127.0.0.1 only.
//
// It prints `issuer=<url>` once it listens, then reads one line of JSON from standard
// input — {"client_id", "client_secret", "redirect_uri"} — registers that client and
// prints `ready`. (The gateway's callback URL is known only after the gateway starts, and
// the gateway needs the issuer first.) It exits when standard input closes, so it never
// outlives the test that started it.
//
// Whoever signs in with the login `<email>` gets that email as their subject and email
// (verified, unless the login starts with `unverified`), and the name before the `@`.

import http from 'node:http';
import readline from 'node:readline';
import Provider from 'oidc-provider';

let handle = (request, response) => {
  response.statusCode = 503;
  response.end('the test has not registered its client yet');
};
const server = http.createServer((request, response) => handle(request, response));

server.listen(0, '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  process.stdout.write(`issuer=${issuer}\n`);
  const input = readline.createInterface({ input: process.stdin });
  input.once('line', (line) => {
    const client = JSON.parse(line);
    const provider = new Provider(issuer, {
      clients: [{
        client_id: client.client_id,
        client_secret: client.client_secret,
        redirect_uris: [client.redirect_uri],
        grant_types: ['authorization_code'],
        response_types: ['code'],
      }],
      findAccount: (context, id) => ({
        accountId: id,
        claims: () => ({
          sub: id,
          email: id,
          email_verified: !id.startsWith('unverified'),
          name: id.split('@')[0],
        }),
      }),
      claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'] },
      cookies: { keys: ['weft-test-only-cookie-key'] },
      pkce: { required: () => true },
      features: { devInteractions: { enabled: true } },
    });
    handle = provider.callback();
    process.stdout.write('ready\n');
  });
  input.on('close', () => process.exit(0));
});
