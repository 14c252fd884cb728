// The rtnetlink watcher: MTU changes and deletion of our TUN interface are reported, other
// interfaces are ignored, and a move to another namespace is not mistaken for a deletion.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { waitReadable } from '../../src/io/libc.ts';
import { LinkWatcher, type LinkEvent } from '../../src/io/netlink.ts';
import { Tun } from '../../src/io/tun.ts';
import { createNetns, deleteNetns, ip, withNetns } from './io-helpers.ts';

/** Collects events until `done` says enough or `ms` pass. */
function collect(watcher: LinkWatcher, ms: number, done: (events: LinkEvent[]) => boolean): LinkEvent[] {
  const events: LinkEvent[] = [];
  const deadline = Date.now() + ms;
  while (!done(events) && Date.now() < deadline) {
    if (waitReadable(watcher.fd, 50)) events.push(...watcher.read());
  }
  return events;
}

test('netlink watcher reports MTU changes of our interface only, then its deletion', async () => {
  await withNetns(async (ns) => {
    const tun = Tun.open('ztnl0', { mtu: 1420 });
    const watcher = LinkWatcher.open(tun.ifindex, tun.fds[0] as number, 1420);
    try {
      // Another interface's changes and a no-op change of ours produce nothing.
      const bystander = Tun.open('ztother0');
      ip('-n', ns, 'link', 'set', 'ztother0', 'mtu', '1300');
      ip('-n', ns, 'link', 'set', 'ztnl0', 'mtu', '1420');
      ip('-n', ns, 'link', 'del', 'ztother0');
      bystander.close();
      assert.deepEqual(collect(watcher, 300, () => false), []);

      ip('-n', ns, 'link', 'set', 'ztnl0', 'mtu', '1280');
      assert.deepEqual(collect(watcher, 2000, (e) => e.length > 0), [{ kind: 'mtu', mtu: 1280 }]);
      tun.setMtu(9000);
      assert.deepEqual(collect(watcher, 2000, (e) => e.length > 0), [{ kind: 'mtu', mtu: 9000 }]);

      ip('-n', ns, 'link', 'del', 'ztnl0');
      assert.deepEqual(collect(watcher, 2000, (e) => e.length > 0), [{ kind: 'deleted' }]);
    } finally {
      watcher.close();
      tun.close();
    }
  });
});

test('netlink watcher reports a move to another namespace as moved, not deleted', async () => {
  const other = createNetns();
  try {
    await withNetns(async (ns) => {
      const tun = Tun.open('ztnl1');
      const watcher = LinkWatcher.open(tun.ifindex, tun.fds[0] as number, tun.mtu());
      try {
        ip('-n', ns, 'link', 'set', 'ztnl1', 'netns', other);
        const events = collect(watcher, 2000, (e) => e.length > 0);
        assert.deepEqual(events, [{ kind: 'moved' }]);
        // After the move this namespace's notifications no longer concern us.
        ip('-n', other, 'link', 'set', 'ztnl1', 'mtu', '1300');
        ip('-n', other, 'link', 'del', 'ztnl1');
        assert.deepEqual(collect(watcher, 300, () => false), []);
        assert.equal(tun.isAttached(), false);
      } finally {
        watcher.close();
        tun.close();
      }
    });
  } finally {
    deleteNetns(other);
  }
});
