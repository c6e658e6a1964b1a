// What the signed-in caller may do, from /me's grants (`permission` or
// `permission@{selector}`): used only to hide or disable what would be refused; the
// collector checks every request itself.

import type { Me } from "./api";

export class Grants {
  private readonly all = new Set<string>();
  private readonly some = new Set<string>();

  constructor(me: Me) {
    for (const g of me.grants) {
      const at = g.indexOf("@");
      if (at < 0) {
        this.all.add(g);
        this.some.add(g);
      } else {
        this.some.add(g.slice(0, at));
      }
    }
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
