interface Waiting<In, Out> {
  readonly input: In;
  readonly resolve: (output: Out) => void;
  readonly reject: (error: unknown) => void;
}

/**
 * Calls that go to the database together: the first waits only for the end of the current tick (so that
 * lookups one request makes at once share a statement), and calls made while a statement is in flight wait
 * for it and go together in the next. Under load N concurrent requests then cost a few statements instead of
 * N, each a round trip that wakes Postgres (on a shared two-core machine, the dearest thing a request does);
 * alone, a call costs what it did. `run` gets the inputs in call order and returns one output per input, in
 * that order; if it throws, every call of the batch fails with its error (unless `alone` says otherwise).
 */
export class Batched<In, Out> {
  readonly #run: (inputs: readonly In[]) => Promise<readonly Out[]>;
  readonly #max: number;
  readonly #alone: ((error: unknown) => boolean) | undefined;
  #queue: Waiting<In, Out>[] = [];
  #busy = false;

  /**
   * @param max inputs per statement: far above what a process has in flight, well below Postgres's 65,535 parameters.
   * @param alone whether a batch's error may belong to one of its inputs (a row the database refuses for its
   *   content): the inputs are then run one by one, so that only that one's call fails.
   */
  constructor(run: (inputs: readonly In[]) => Promise<readonly Out[]>, { max = 500, alone }: { max?: number; alone?: (error: unknown) => boolean } = {}) {
    this.#run = run;
    this.#max = max;
    this.#alone = alone;
  }

  call(input: In): Promise<Out> {
    return new Promise<Out>((resolve, reject) => {
      this.#queue.push({ input, resolve, reject });
      if (!this.#busy) {
        this.#busy = true;
        process.nextTick(() => void this.#drain());
      }
    });
  }

  async #drain(): Promise<void> {
    try {
      while (this.#queue.length) {
        const batch = this.#queue.splice(0, this.#max);
        try {
          await this.#settle(batch);
        } catch (error) {
          if (batch.length === 1 || !this.#alone?.(error)) {
            for (const w of batch) w.reject(error);
            continue;
          }
          for (const w of batch) await this.#settle([w]).catch((alone: unknown) => w.reject(alone));
        }
      }
    } finally {
      this.#busy = false;
    }
  }

  async #settle(batch: readonly Waiting<In, Out>[]): Promise<void> {
    const outputs = await this.#run(batch.map((w) => w.input));
    batch.forEach((w, i) => w.resolve(outputs[i] as Out));
  }
}
