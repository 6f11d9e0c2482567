// chat.js: the person's entries as conversations, for a model with a chat template. Each entry becomes one
// exchange: a message from the person (the instruction, or the entry's own opening lines that start with ">") and
// the entry as the model's answer, so an instruction-tuned model learns to answer in the person's style.

export const DEFAULT_INSTRUCTION = 'Write a short entry for my diary.';

/**
 * @param {string} entry
 * @param {string} instruction
 * @returns {{ role: string, content: string }[] | null} null when the entry has no answer text
 */
export function conversationOf(entry, instruction) {
  const lines = entry.split('\n');
  const asked = [];
  while (lines.length && /^\s*>/.test(lines[0])) asked.push(/** @type {string} */ (lines.shift()).replace(/^\s*>\s?/, ''));
  const answer = lines.join('\n').trim();
  if (!answer) return null;
  const question = asked.length ? asked.join('\n').trim() : instruction.trim();
  return [{ role: 'user', content: question }, { role: 'assistant', content: answer }];
}

/**
 * @param {string[]} entries
 * @param {string} instruction
 */
export function conversationsOf(entries, instruction) {
  return entries.map((e) => conversationOf(e, instruction)).filter((c) => c !== null);
}
