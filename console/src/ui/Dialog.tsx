// A modal dialog on the native <dialog> element: focus is trapped and Escape closes it,
// with no script of ours; closed, it gives the focus back to what opened it.

import type { ComponentChildren } from "preact";
import { useEffect, useRef } from "preact/hooks";

export function Dialog(props: {
  title: string;
  open: boolean;
  onClose: () => void;
  /** Why the last submit was refused, shown inside the dialog (the page behind is inert). */
  error?: string | null;
  children: ComponentChildren;
}) {
  const ref = useRef<HTMLDialogElement>(null);
  // What had the focus before: it gets it back when the dialog closes (Escape, Cancel or
  // done).
  const opener = useRef<HTMLElement | null>(null);
  useEffect(() => {
    const d = ref.current;
    if (!d) return;
    if (props.open && !d.open) {
      opener.current = document.activeElement instanceof HTMLElement ? document.activeElement : null;
      d.showModal();
    }
    if (!props.open && d.open) d.close();
    if (!props.open && opener.current) {
      const back = opener.current;
      opener.current = null;
      if (back.isConnected) back.focus();
    }
  }, [props.open]);
  return (
    <dialog ref={ref} aria-label={props.title} onClose={props.onClose} class="dialog">
      <h2>{props.title}</h2>
      {props.open && props.error && <p class="error" role="alert">{props.error}</p>}
      {props.open && props.children}
    </dialog>
  );
}
