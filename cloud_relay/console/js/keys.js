// Keyboard shortcuts (the help overlay in index.html lists them): a key press becomes a
// command, and the controller carries it out. Pure apart from reading the event.

/** The command for a keydown `e`, or null: {cmd, arg?, preventDefault?}. */
export function commandFor(e) {
  if (e.target instanceof HTMLInputElement || e.target instanceof HTMLSelectElement) return null;
  const k = e.key;
  if (k === "?") return { cmd: "help" };
  if (k === "Escape") return { cmd: "closeHelp" };
  if (k === "t" || k === "T") return { cmd: "theme" };
  if (k === " ") return { cmd: "playPause", preventDefault: true };
  if (k === "a" || k === "A") return { cmd: "ack" };
  if (k === "r" || k === "R") return { cmd: "replayCue" };
  if (k === "l" || k === "L") return { cmd: "live" };
  if (k === "ArrowLeft") return { cmd: "seekBy", arg: e.shiftKey ? -15 : -5, preventDefault: true };
  if (k === "ArrowRight") return { cmd: "seekBy", arg: e.shiftKey ? 15 : 5, preventDefault: true };
  if (/^[1-9]$/.test(k)) return { cmd: "room", arg: Number(k) - 1 };
  return null;
}
