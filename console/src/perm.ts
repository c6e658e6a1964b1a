// What the signed-in caller may do, from /me's grants (`permission` or
// `permission@{selector}`): used only to hide or disable what would be refused; the
// collector checks every request itself.

import type { Me } from "./api";

export class Grants {
  private readonly all = new Set<string>();
  private readonly some = new Set<string>();
  private readonly selectors = new Map<string, string[]>();

  constructor(me: Me) {
    for (const g of me.grants) {
      const at = g.indexOf("@");
      if (at < 0) {
        this.all.add(g);
        this.some.add(g);
      } else {
        const p = g.slice(0, at);
        this.some.add(p);
        this.selectors.set(p, [...(this.selectors.get(p) ?? []), g.slice(at + 1)]);
      }
    }
  }

  /** The host selectors `permission` is held on when it is not held everywhere: the owner
   * scopes a team's rules and receivers may carry. */
  scopes(permission: string): string[] {
    return this.all.has(permission) ? [] : (this.selectors.get(permission) ?? []);
  }

  /** Holds `permission` on some hosts or all. */
  can(permission: string): boolean {
    return this.some.has(permission);
  }

  /** Holds `permission` on every host (fleet-wide configuration, administration). */
  canEverywhere(permission: string): boolean {
    return this.all.has(permission);
  }
}
