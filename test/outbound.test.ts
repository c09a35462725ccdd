import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { isPublicAddress } from '../src/clients/outbound.js';

describe('outbound address filter', () => {
  it('refuses loopback, private, link-local and every IPv6 form that carries an IPv4 address inside', () => {
    const refused = [
      '127.0.0.1', '10.1.2.3', '172.16.0.1', '192.168.1.1', '169.254.169.254', '100.64.0.1', '0.0.0.0', '224.0.0.1',
      '::', '::1', 'fc00::1', 'fd12:3456::1', 'fe80::1', 'ff02::1', '2001:db8::1',
      // IPv4 inside IPv6: compatible, mapped (dotted and hex), NAT64 well-known and local-use, 6to4, Teredo.
      '::7f00:1', '::127.0.0.1', '::ffff:127.0.0.1', '::ffff:7f00:1', '0:0:0:0:0:ffff:7f00:1', '::ffff:a9fe:a9fe', '64:ff9b::7f00:1', '64:ff9b:1::a00:1',
      '2002:7f00:1::1', '2001:0:4136:e378:8000:63bf:3fff:fdd2', '100::1',
      'not-an-address', '',
    ];
    for (const address of refused) assert.equal(isPublicAddress(address), false, address);
  });

  it('lets public addresses through', () => {
    for (const address of ['93.184.216.34', '8.8.8.8', '::ffff:93.184.216.34', '2606:2800:220:1:248:1893:25c8:1946', '2a00:1450:4001:80b::200e']) {
      assert.equal(isPublicAddress(address), true, address);
    }
  });
});
