// Keyboard shortcuts (the help overlay in index.html lists them): a key press becomes a
// command, and the controller carries it out. Pure apart from reading the event.

/** The command for a keydown `e`, or null: {cmd, arg?, preventDefault?}. */
export function commandFor(e) {
  const t = e.target;
  if (t instanceof HTMLInputElement || t instanceof HTMLSelectElement || t instanceof HTMLTextAreaElement) return null;
  if (e.ctrlKey || e.metaKey || e.altKey) return null; // the browser's and the EHR's shortcuts
  const k = e.key;
  if (k === "?") return { cmd: "help" };
  if (k === "Escape") return { cmd: "closeHelp" };
  if (k === "t" || k === "T") return { cmd: "theme" };
  if (k === " ") return { cmd: "playPause", preventDefault: true };
  if (k === "a" || k === "A") return { cmd: "ack" };
  if (k === "g" || k === "G") return { cmd: "reply", arg: "got_it" };
  if (k === "p" || k === "P") return { cmd: "reply", arg: "repeat" };
  if (k === "m" || k === "M") return { cmd: "reply", arg: "see_me" };
  if (k === "r" || k === "R") return { cmd: "replayCue" };
  if (k === "l" || k === "L") return { cmd: "live" };
  if (k === "c" || k === "C") return { cmd: "catchUp" };
  if (k === "n" || k === "N") return { cmd: "hearing" };
  if (k === "f" || k === "F" || k === "/") return { cmd: "search", preventDefault: true };
  if (k === "]") return { cmd: "speed", arg: 1 };
  if (k === "[") return { cmd: "speed", arg: -1 };
  if (k === "=" || k === "+") return { cmd: "volume", arg: 0.1 };
  if (k === "-" || k === "_") return { cmd: "volume", arg: -0.1 };
  if (k === "ArrowLeft") return { cmd: "seekBy", arg: e.shiftKey ? -15 : -5, preventDefault: true };
  if (k === "ArrowRight") return { cmd: "seekBy", arg: e.shiftKey ? 15 : 5, preventDefault: true };
  if (/^[1-9]$/.test(k)) return { cmd: "room", arg: Number(k) - 1 };
  return null;
}
