// Turns `perf script` output into folded stacks, a flame graph SVG and the hottest frames, without
// any outside scripts. Pure functions over text: perf/flamegraph.ts runs perf and writes files.
//
// A flame graph (Brendan Gregg's layout) draws every sampled call stack as a tower of boxes, the
// outermost caller at the bottom; a box's width is the share of samples in which that function was
// on the stack. Wide boxes at the top (no callee above them) are where the CPU actually was.

/** One sample: who was running and its call stack, innermost frame first (as perf prints it). */
export interface Sample {
  readonly comm: string;
  readonly pid: number;
  readonly tid: number;
  readonly frames: readonly string[];
}

const HEADER = /^(\S.*?)\s+(\d+)(?:\/(\d+))?\s/;
const FRAME = /^\s+([0-9a-f]+)\s+(.*?)\s+\((.*)\)\s*$/;

/**
 * Names a frame: JavaScript from Node's perf map keeps its tier marker (`*` optimised, `~`
 * interpreted) and its file relative to `repoRoot`; native symbols lose their `+0x..` offset;
 * unknown symbols are named by their library.
 */
export function frameName(symbol: string, dso: string, repoRoot: string): string {
  let name = symbol.replace(/\+0x[0-9a-f]+$/, '');
  if (name === '[unknown]' || name === '') {
    const library = dso.split('/').pop() ?? dso;
    return `[${library.replace(/^\[|\]$/g, '') || 'unknown'}]`;
  }
  // V8's perf map: "JS:*encrypt file:///repo/src/x.ts:12:3", older "LazyCompile:~f file:///…".
  name = name.replace(/^(?:JS|LazyCompile|Function):/, '');
  const root = repoRoot.endsWith('/') ? repoRoot : `${repoRoot}/`;
  name = name.replaceAll(`file://${root}`, '').replaceAll(root, '');
  if (dso.includes('[kernel')) return `${name} [k]`;
  return name;
}

/** Parses `perf script` text (samples recorded with -g); samples without frames are kept empty. */
export function parsePerfScript(text: string, repoRoot: string): Sample[] {
  const samples: Sample[] = [];
  let current: { comm: string; pid: number; tid: number; frames: string[] } | null = null;
  for (const line of text.split('\n')) {
    if (line.trim() === '') {
      if (current !== null) samples.push(current);
      current = null;
      continue;
    }
    const frame = FRAME.exec(line);
    if (frame !== null && current !== null) {
      current.frames.push(frameName(frame[2] ?? '', frame[3] ?? '', repoRoot));
      continue;
    }
    const header = HEADER.exec(line);
    if (header !== null && !/^\s/.test(line)) {
      if (current !== null) samples.push(current);
      const pid = Number(header[2]);
      current = { comm: header[1]!.trim(), pid, tid: header[3] === undefined ? pid : Number(header[3]), frames: [] };
    }
  }
  if (current !== null) samples.push(current);
  return samples;
}

/** A JavaScript frame from one of the project's own files (named as frameName names them). */
const OWN_CODE = /(?:^|\s)(?:src|bench|perf|test)\/\S+\.ts:\d+/;

/**
 * Folded stacks ("root;caller;callee" → samples), outermost first, each under the roots
 * `rootsOf(sample)` gives (e.g. the process's role and the thread's name). With `trimRuntime`,
 * the frames below the outermost frame of the project's own code (thread start, event loop,
 * module evaluation: the same two dozen frames in every sample) become one "(node runtime)".
 */
export function fold(samples: readonly Sample[], rootsOf: (sample: Sample) => readonly string[], trimRuntime = false): Map<string, number> {
  const folded = new Map<string, number>();
  for (const sample of samples) {
    let frames = [...sample.frames].reverse();
    const firstOwn = trimRuntime ? frames.findIndex((f) => OWN_CODE.test(f)) : -1;
    if (firstOwn > 0) frames = ['(node runtime)', ...frames.slice(firstOwn)];
    const stack = [...rootsOf(sample), ...frames].map((f) => f.replaceAll(';', ':')).join(';');
    folded.set(stack, (folded.get(stack) ?? 0) + 1);
  }
  return folded;
}

export interface FrameShare {
  readonly name: string;
  readonly samples: number;
  readonly percent: number;
}

/**
 * The frames with the most samples where they are the innermost frame (self) and where they are
 * anywhere on the stack (total, each frame counted once per stack). The first `skipRoots` frames
 * of each stack (synthetic process/thread labels) are not frames of code and are left out.
 */
export function topFrames(folded: ReadonlyMap<string, number>, count: number, skipRoots = 0): { self: FrameShare[]; total: FrameShare[]; samples: number } {
  const self = new Map<string, number>();
  const total = new Map<string, number>();
  let samples = 0;
  for (const [stack, n] of folded) {
    samples += n;
    const frames = stack.split(';').slice(skipRoots);
    const leaf = frames[frames.length - 1];
    if (leaf !== undefined) self.set(leaf, (self.get(leaf) ?? 0) + n);
    for (const frame of new Set(frames)) total.set(frame, (total.get(frame) ?? 0) + n);
  }
  const top = (counts: Map<string, number>): FrameShare[] =>
    [...counts].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0])).slice(0, count)
      .map(([name, n]) => ({ name, samples: n, percent: samples === 0 ? 0 : (100 * n) / samples }));
  return { self: top(self), total: top(total), samples };
}

/** Samples per value of the first `depth` roots (e.g. per process and thread). */
export function samplesByRoot(folded: ReadonlyMap<string, number>, depth: number): FrameShare[] {
  const counts = new Map<string, number>();
  let samples = 0;
  for (const [stack, n] of folded) {
    samples += n;
    const key = stack.split(';').slice(0, depth).join(' / ');
    counts.set(key, (counts.get(key) ?? 0) + n);
  }
  return [...counts].sort((a, b) => b[1] - a[1]).map(([name, n]) => ({ name, samples: n, percent: (100 * n) / samples }));
}

interface Node {
  readonly name: string;
  value: number;
  readonly children: Map<string, Node>;
}

function buildTree(folded: ReadonlyMap<string, number>): Node {
  const root: Node = { name: 'all', value: 0, children: new Map() };
  for (const [stack, n] of folded) {
    root.value += n;
    let node = root;
    for (const name of stack.split(';')) {
      let child = node.children.get(name);
      if (child === undefined) {
        child = { name, value: 0, children: new Map() };
        node.children.set(name, child);
      }
      child.value += n;
      node = child;
    }
  }
  return root;
}

function escapeXml(text: string): string {
  return text.replace(/[<>&"']/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;', "'": '&apos;' })[c]!);
}

/** A stable colour per kind of frame: JS green, V8 internals aqua, kernel orange, crypto purple, other native yellow. */
export function frameColour(name: string): string {
  let h = 0;
  for (let i = 0; i < name.length; i++) h = (h * 31 + name.charCodeAt(i)) >>> 0;
  const jitter = (h % 40) - 20;
  if (name.endsWith(' [k]')) return `rgb(${230 + (jitter >> 2)},${110 + jitter},40)`;
  if (/sodium|chacha|poly1305|blake2|curve25519|crypto_/i.test(name)) return `rgb(${170 + jitter},110,${210 + (jitter >> 2)})`;
  if (/^(?:Builtin|BytecodeHandler|Stub|RegExp|Handler|InterpreterEntryTrampoline)|^v8::|^Builtins_/.test(name)) {
    return `rgb(80,${190 + jitter},${200 + (jitter >> 2)})`;
  }
  if (/^[*~^+]|\.ts:\d+|\.js:\d+/.test(name)) return `rgb(${90 + jitter},${190 + (jitter >> 2)},80)`;
  return `rgb(${225 + (jitter >> 2)},${190 + jitter},60)`;
}

export interface SvgOptions {
  readonly title: string;
  readonly subtitle?: string;
  readonly width?: number;
  readonly frameHeight?: number;
}

/** The flame graph as a standalone SVG; hovering a box shows its name, samples and share. */
export function renderFlameGraph(folded: ReadonlyMap<string, number>, options: SvgOptions): string {
  const width = options.width ?? 1200;
  const frameHeight = options.frameHeight ?? 16;
  const pad = 10;
  const top = 50;
  const root = buildTree(folded);
  const depthOf = (node: Node): number => 1 + Math.max(0, ...[...node.children.values()].map(depthOf));
  const depth = depthOf(root);
  const height = top + depth * frameHeight + pad * 2;
  const scale = root.value === 0 ? 0 : (width - 2 * pad) / root.value;
  const charWidth = 6.6;
  const boxes: string[] = [];
  const draw = (node: Node, x: number, level: number): void => {
    const w = node.value * scale;
    if (w < 0.3) return;
    const y = height - pad - (level + 1) * frameHeight;
    const percent = ((100 * node.value) / root.value).toFixed(2);
    const label = `${node.name} (${node.value} samples, ${percent}%)`;
    const fill = level === 0 ? 'rgb(200,200,200)' : frameColour(node.name);
    const maxChars = Math.floor((w - 6) / charWidth);
    const text = maxChars < 3 ? '' : node.name.length <= maxChars ? node.name : `${node.name.slice(0, maxChars - 2)}..`;
    boxes.push(
      `<g><title>${escapeXml(label)}</title><rect x="${x.toFixed(2)}" y="${y}" width="${w.toFixed(2)}" height="${frameHeight - 1}" ` +
        `fill="${fill}" rx="2"/>` +
        (text === '' ? '' : `<text x="${(x + 3).toFixed(2)}" y="${y + frameHeight - 5}">${escapeXml(text)}</text>`) + '</g>',
    );
    let childX = x;
    for (const child of [...node.children.values()].sort((a, b) => a.name.localeCompare(b.name))) {
      draw(child, childX, level + 1);
      childX += child.value * scale;
    }
  };
  draw(root, pad, 0);
  return [
    `<?xml version="1.0" standalone="no"?>`,
    `<svg version="1.1" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" xmlns="http://www.w3.org/2000/svg">`,
    `<style>text { font-family: monospace; font-size: 11px; fill: rgb(0,0,0); pointer-events: none; } ` +
      `rect:hover { stroke: black; stroke-width: 0.5; } .title { font-size: 16px; } .subtitle { font-size: 12px; fill: rgb(80,80,80); }</style>`,
    `<rect x="0" y="0" width="${width}" height="${height}" fill="rgb(250,250,245)"/>`,
    `<text class="title" x="${pad}" y="22">${escapeXml(options.title)}</text>`,
    `<text class="subtitle" x="${pad}" y="40">${escapeXml(options.subtitle ?? `${root.value} samples`)}</text>`,
    ...boxes,
    '</svg>',
    '',
  ].join('\n');
}
