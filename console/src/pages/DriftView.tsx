// A server's tool drift as a diff: per tool added, removed or changed, its description and
// input schema before (as approved) and after (as the server lists them now), line by line.

import { lineDiff, prettyJson } from "../diff";
import type { Drift, ToolChange, ToolText } from "./servers";

function textOf(t: ToolText | null): { description: string; schema: string } {
  return { description: t?.description ?? "", schema: t ? prettyJson(t.input_schema) : "" };
}

function Lines(props: { label: string; before: string; after: string }) {
  if (props.before === props.after) return null;
  return (
    <div>
      <div class="muted">{props.label}</div>
      <pre class="diff">
        {lineDiff(props.before, props.after).map((l, i) => (
          <div key={i} class={l.op === "+" ? "added" : l.op === "-" ? "removed" : ""}>
            {l.op} {l.text}
          </div>
        ))}
      </pre>
    </div>
  );
}

function kindOf(c: ToolChange, d: Drift): string {
  if (d.added.includes(c.tool)) return "new tool";
  if (d.removed.includes(c.tool)) return "gone";
  return c.before ? "changed" : "changed (the approved text was not kept)";
}

export function DriftView(props: { drift: Drift }) {
  const d = props.drift;
  if (d.changes.length === 0) {
    // An older agent's event: names only.
    return (
      <ul class="diff" aria-label="Tool drift">
        {d.added.map((t) => <li key={`+${t}`} class="added">+ {t} (new tool)</li>)}
        {d.removed.map((t) => <li key={`-${t}`} class="removed">− {t} (gone)</li>)}
        {d.changed.map((t) => <li key={`~${t}`} class="changed">~ {t} (description or input schema changed)</li>)}
      </ul>
    );
  }
  return (
    <div aria-label="Tool drift" role="group">
      {d.changes.map((c) => {
        const before = textOf(c.before);
        const after = textOf(c.after);
        return (
          <section key={c.tool} class="tool-change" data-tool-change={c.tool}>
            <h3>
              <code>{c.tool}</code> <span class="muted">{kindOf(c, d)}</span>
            </h3>
            <Lines label="Description" before={before.description} after={after.description} />
            <Lines label="Input schema" before={before.schema} after={after.schema} />
          </section>
        );
      })}
    </div>
  );
}
